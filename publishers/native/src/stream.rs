//! One pass over an archive, its blobs streamed to every registry that
//! needs them while they are read: each byte is read once (from disk or
//! from the compose server) and shared by every destination (one
//! reference-counted buffer, no copy per registry). The reader (a blocking
//! thread) never waits on a store's round trips: each blob it meets (not
//! a manifest or an index: see `archive::scan`) is offered to every
//! destination at once, and its bytes go into a buffer of
//! at most [`AHEAD`] bytes per pass while the stores are asked about it.
//! Every blob is asked about at once (a registry: whether it has it, with
//! its upload session opened in the same round trip); at each destination
//! the bytes go up one blob after another, each starting once the one
//! before has been sent there.
//!
//! Why one blob's bytes at a time: the blob being read is the only one
//! whose bytes are not all in the buffer; with one upload per pass and
//! destination taking bytes, that upload is either the blob being read
//! (the buffer drains as it goes) or one whose bytes are all there, so a
//! pass never waits on itself, however many passes share the registry's
//! requests. A chunk's budget is freed once every destination has sent it.
//!
//! A destination whose upload fails is left out of the rest of the pass;
//! the others go on, and the reader reads (and checks) to the end.
//! Publishing sends that destination what it still lacks.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};

use crate::oci::Descriptor;
use crate::transport::{Intake, Store};

/// Bytes a pass reads ahead of its uploads, unless told otherwise (about
/// two round trips of a fast link), whatever the size of its blobs.
pub(crate) const AHEAD: usize = 2 << 20;

/// Bytes all the passes of a run's reading stage read ahead together.
const ALL_AHEAD: usize = 16 << 20;

/// Whether a pass may send what it reads: `None` at once; else it waits
/// for the value (sent once the run knows whether the image may be
/// written; a sender gone means no).
pub type Go = Option<tokio::sync::watch::Receiver<Option<bool>>>;

/// Waits for `go`'s answer.
pub async fn allowed(go: &Go) -> bool {
    let Some(rx) = go else { return true };
    let mut rx = rx.clone();
    rx.wait_for(Option::is_some)
        .await
        .map(|v| *v == Some(true))
        .unwrap_or(false)
}

/// How a run's reading stage reads: how many passes may read at once (a
/// decoder's memory and a core each), and how far each reads ahead.
#[derive(Clone)]
pub struct Reading {
    /// Permits to read; a pass gives its permit back once it has read,
    /// while its blobs may still be going up.
    pub readers: Arc<tokio::sync::Semaphore>,
    /// Bytes each pass reads ahead of its uploads.
    pub ahead: usize,
}

impl Reading {
    /// Waits for a permit to read (held until the reading is done).
    pub(crate) async fn permit(
        &self,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, crate::artifact::ReadFailure> {
        self.readers
            .clone()
            .acquire_owned()
            .await
            .map_err(crate::artifact::ReadFailure::stopped)
    }

    /// `readers` passes reading at once, `passes` at most alive (reading
    /// or sending): together they read no more than 16 MB ahead.
    pub fn new(readers: usize, passes: usize) -> Reading {
        Reading {
            readers: Arc::new(tokio::sync::Semaphore::new(readers)),
            ahead: (ALL_AHEAD / passes.max(1)).clamp(CHUNK, AHEAD),
        }
    }
}

/// The size of the chunks the bytes go up in.
const CHUNK: usize = 256 << 10;

/// Bytes a pass may still buffer, and the buffers of its chunks sent.
struct Budget {
    left: Mutex<usize>,
    freed: Condvar,
    /// Chunk buffers whose bytes are out, for the pass's next chunks: fresh
    /// memory for each chunk cost the kernel a zeroed page per 4 KB (a
    /// fifth of archgate's CPU time while streaming, measured). At most as
    /// many as the budget lets be in flight at once.
    spare: Mutex<Vec<Vec<u8>>>,
}

impl Budget {
    fn new(ahead: usize) -> Budget {
        Budget {
            left: Mutex::new(ahead.max(CHUNK)),
            freed: Condvar::new(),
            spare: Mutex::new(Vec::new()),
        }
    }

    /// An empty buffer for a chunk: one given back, or a new one.
    fn buffer(&self) -> Vec<u8> {
        let spare = self.spare.lock().expect("lock").pop();
        spare.unwrap_or_else(|| Vec::with_capacity(CHUNK))
    }

    /// Keeps a buffer for the pass's next chunks.
    fn give_back(&self, mut buf: Vec<u8>) {
        buf.clear();
        self.spare.lock().expect("lock").push(buf);
    }

    /// Waits (on the reader's blocking thread) until `n` bytes are free.
    fn take(self: &Arc<Self>, n: usize) -> Held {
        let mut left = self.left.lock().expect("lock");
        while *left < n {
            left = self.freed.wait(left).expect("lock");
        }
        *left -= n;
        Held {
            budget: self.clone(),
            n,
        }
    }
}

/// Bytes of the budget held by a chunk until it is sent or dropped.
struct Held {
    budget: Arc<Budget>,
    n: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        *self.budget.left.lock().expect("lock") += self.n;
        self.budget.freed.notify_all();
    }
}

/// A chunk's bytes, and its hold on the budget, shared by every
/// destination: freed once the last one has sent (or dropped) it.
type Chunk = (Bytes, Arc<Held>);

/// A chunk's bytes; its buffer goes back to the pass's spares once they are
/// written (dropped).
struct Recycled {
    buf: Vec<u8>,
    budget: Arc<Budget>,
}

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        self.budget.give_back(std::mem::take(&mut self.buf));
    }
}

/// A blob the reader has come to; its bytes follow on `chunks`, one
/// receiver per destination.
struct Offer {
    desc: Descriptor,
    chunks: Vec<mpsc::UnboundedReceiver<Chunk>>,
}

/// Where a pass's blobs go: a store (a registry repository), other
/// repositories of the same registry that get each blob mounted from it,
/// and whether (once known) anything may be written there.
pub(crate) type Dest<'a, S> = (&'a S, &'a [S], &'a Go);

/// What a pass gave: the reader's value, blobs pushed (over every
/// destination), and each destination's failure (by its index), if any.
pub(crate) struct Streamed<T> {
    pub(crate) value: T,
    pub(crate) pushed: usize,
    pub(crate) failed: Vec<(usize, anyhow::Error)>,
    /// Whether the layers sent were left to the destinations to check.
    pub(crate) checked: bool,
}

/// Runs `work` (one pass over an archive) on a blocking thread; each blob
/// it meets is offered to every destination's store, which takes those it
/// lacks (and cannot mount), limited to `only` when given. A blob in a
/// destination's store is then mounted into its `also` (other repositories
/// of the same registry), so that their targets find it. An upload that
/// fails ends that destination's part of the pass, not the pass: the
/// failures come back with what `work` returned. A layer that every
/// destination checks against its digest itself is not hashed by the pass
/// ([`Streamed::checked`]). Nothing is asked of or sent to a destination
/// before its `go` says yes; when it says no, it takes nothing.
pub(crate) async fn stream_archive<S, T, W>(
    dests: &[Dest<'_, S>],
    only: Option<BTreeMap<String, Descriptor>>,
    ahead: usize,
    work: W,
) -> Result<Streamed<T>>
where
    S: Store,
    T: Send + 'static,
    W: FnOnce(&mut dyn crate::archive::BlobSink) -> Result<T> + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<Offer>(1);
    let budget = Arc::new(Budget::new(ahead));
    let ways = dests.len();
    // Every destination checks what it is sent: the pass does not hash it
    // too.
    let checked = !dests.is_empty() && dests.iter().all(|(s, _, _)| s.checks_digests());
    let reader = tokio::task::spawn_blocking(move || {
        work(&mut ChannelSink {
            tx,
            budget,
            ways,
            checked,
        })
    });
    // `rx` moves in, so that when the uploads stop early the reader's next
    // offer fails instead of waiting for a receiver that is gone.
    let uploads = async move {
        let only = only.as_ref();
        let mut pushed = 0;
        let mut failed: Vec<(usize, anyhow::Error)> = Vec::new();
        let mut tasks = FuturesUnordered::new();
        // Per destination: fires once the bytes of the last blob offered
        // there have been sent (or were not needed).
        let mut before: Vec<Option<oneshot::Receiver<()>>> = (0..ways).map(|_| None).collect();
        let mut offers = true;
        loop {
            tokio::select! {
                offer = rx.recv(), if offers => match offer {
                    Some(Offer { desc, chunks }) => {
                        for (d, chunks) in chunks.into_iter().enumerate() {
                            // A destination that failed takes nothing more
                            // (its receiver dropped: no bytes kept for it).
                            if failed.iter().any(|(f, _)| *f == d) {
                                continue;
                            }
                            let (done, next) = oneshot::channel();
                            let after = before[d].replace(next);
                            let offer = Offer { desc: desc.clone(), chunks: vec![chunks] };
                            let (store, also, go) = dests[d];
                            let task = take_blob(store, also, (only, go), offer, after, done);
                            tasks.push(async move { (d, task.await) });
                        }
                    }
                    None => offers = false,
                },
                Some((d, taken)) = tasks.next(), if !tasks.is_empty() => match taken {
                    Ok(n) => pushed += n,
                    Err(e) => {
                        tracing::warn!(store = %dests[d].0.name(), "streaming while reading failed (sent again when publishing): {e:#}");
                        if !failed.iter().any(|(f, _)| *f == d) {
                            failed.push((d, e));
                        }
                    }
                },
                else => break,
            }
        }
        (pushed, failed)
    };
    let (read, (pushed, failed)) = tokio::join!(reader, uploads);
    let value = read.map_err(|e| anyhow!("archive reader stopped: {e}"))??;
    Ok(Streamed {
        value,
        pushed,
        failed,
        checked,
    })
}

/// Takes one offered blob: asks the store about it at once; sends its
/// bytes once those of the blob before are sent (`after`), then says so
/// (`done`); mounts it into `also`. 1 when it was pushed.
async fn take_blob<S: Store>(
    store: &S,
    also: &[S],
    (only, go): (Option<&BTreeMap<String, Descriptor>>, &Go),
    offer: Offer,
    after: Option<oneshot::Receiver<()>>,
    done: oneshot::Sender<()>,
) -> Result<usize> {
    let Offer { desc, chunks } = offer;
    let chunks = chunks
        .into_iter()
        .next()
        .expect("one receiver per destination");
    let desc = match only {
        None => desc,
        Some(only) => match only.get(&desc.digest) {
            Some(d) => d.clone(),
            None => {
                drop(chunks);
                return pass_on(after, done).await.map(|()| 0);
            }
        },
    };
    // A blob another pass of this run is sending: not sent from here (its
    // bytes are dropped at once); found or mounted once that one is done.
    let Some(flight) = store.try_guard(&desc.digest) else {
        drop(chunks);
        pass_on(after, done).await?;
        if !allowed(go).await {
            return Ok(0);
        }
        // Into this repository and the others at once (all from where it
        // is), once that upload is over.
        let here = async {
            let _mounting = mount_turn(store, &desc.digest).await;
            store.settle(&desc, Intake::default()).await
        };
        let (here, ()) = tokio::join!(here, mount_into(also, &desc));
        if here?.is_some() {
            bail!(
                "blob {}: another image of this run was sending it, and that failed",
                desc.digest
            );
        }
        return Ok(0);
    };
    // The flight is held from here until the blob is in: one upload per
    // blob and registry. (While this waits for the blob before it in its
    // pass, other passes with the same blob follow, above; it never waits
    // on another pass's flight.) Nothing is asked or sent before the run
    // knows the image may be written (the bytes wait in the buffer).
    if !allowed(go).await {
        drop(chunks);
        drop(flight);
        return pass_on(after, done).await.map(|()| 0);
    }
    let Some(intake) = store.intake(&desc).await? else {
        drop(chunks);
        drop(flight);
        pass_on(after, done).await?;
        mount_into(also, &desc).await;
        return Ok(0);
    };
    if let Some(after) = after {
        let _ = after.await;
    }
    let Some(intake) = store.settle(&desc, intake).await? else {
        drop(chunks);
        let _ = done.send(());
        drop(flight);
        mount_into(also, &desc).await;
        return Ok(0);
    };
    let stream =
        futures_util::stream::unfold((chunks, Some(done)), |(mut c, mut done)| async move {
            match c.recv().await {
                Some((bytes, held)) => {
                    drop(held);
                    Some((Ok(bytes), (c, done)))
                }
                None => {
                    if let Some(done) = done.take() {
                        let _ = done.send(());
                    }
                    None
                }
            }
        });
    store
        .push_stream_into(&desc, intake, stream)
        .await
        .with_context(|| format!("blob {}", desc.digest))?;
    drop(flight);
    tracing::debug!(store = %store.name(), digest = %desc.digest, size = desc.size, "blob pushed from archive");
    crate::progress::pushed(&format!("push {}", store.name()), desc.size);
    mount_into(also, &desc).await;
    Ok(1)
}

/// For a blob whose bytes are not needed: says so once the blob before is
/// done, so that the next blob's bytes go in order.
async fn pass_on(after: Option<oneshot::Receiver<()>>, done: oneshot::Sender<()>) -> Result<()> {
    if let Some(after) = after {
        let _ = after.await;
    }
    let _ = done.send(());
    Ok(())
}

/// A repository's turn to find or mount a blob: once no upload of it is in
/// flight in this run (its flight is free), then one check or mount of it
/// per repository at a time (a key that is not a digest is one flight per
/// repository): mounts of a blob that is in need no registry-wide flight.
pub(crate) async fn mount_turn<S: Store>(
    store: &S,
    digest: &str,
) -> Option<tokio::sync::OwnedMutexGuard<()>> {
    drop(store.guard(digest).await);
    store.guard(&format!("mount {digest}")).await
}

/// Mounts a blob into each of `stores` that does not have it yet, all at
/// once. Only a head start: a mount that fails here is done again (or the
/// blob sent) when the target is published.
async fn mount_into<S: Store>(stores: &[S], desc: &Descriptor) {
    let mounts = stores.iter().map(|s| async move {
        let _mounting = mount_turn(s, &desc.digest).await;
        if s.knows_blob(desc) {
            return;
        }
        if let Err(e) = s.mount_blob(desc).await {
            tracing::debug!(store = %s.name(), digest = %desc.digest, "mount while reading failed (done again when publishing): {e:#}");
        }
    });
    futures_util::future::join_all(mounts).await;
}

struct ChannelSink {
    tx: mpsc::Sender<Offer>,
    budget: Arc<Budget>,
    /// How many destinations each blob's bytes go to.
    ways: usize,
    /// Whether every destination checks what it is sent.
    checked: bool,
}

impl crate::archive::BlobSink for ChannelSink {
    fn checked_downstream(&self) -> bool {
        self.checked
    }

    fn open(&mut self, digest: &str, size: u64) -> Result<Option<Box<dyn std::io::Write + '_>>> {
        let mut desc = Descriptor::new("application/octet-stream", b"");
        desc.digest = digest.to_string();
        desc.size = size;
        let (tx, chunks): (Vec<_>, Vec<_>) =
            (0..self.ways).map(|_| mpsc::unbounded_channel()).unzip();
        self.tx
            .blocking_send(Offer { desc, chunks })
            .map_err(|_| anyhow!("the upload stopped"))?;
        Ok(Some(Box::new(ChannelWriter {
            tx,
            budget: self.budget.clone(),
            buf: self.budget.buffer(),
        })))
    }
}

/// A blob's bytes on their way to its uploads (one per destination), in
/// chunks of [`CHUNK`].
struct ChannelWriter {
    tx: Vec<mpsc::UnboundedSender<Chunk>>,
    budget: Arc<Budget>,
    /// The chunk being filled (at most [`CHUNK`] bytes).
    buf: Vec<u8>,
}

impl ChannelWriter {
    /// Whether no destination takes this blob's bytes any more.
    fn unwanted(&self) -> bool {
        self.tx.iter().all(|tx| tx.is_closed())
    }

    /// Sends a chunk to every destination still taking it, once the budget
    /// has room for it.
    fn send(&mut self, buf: Vec<u8>) {
        let held = Arc::new(self.budget.take(buf.len()));
        let bytes = Bytes::from_owner(Recycled {
            buf,
            budget: self.budget.clone(),
        });
        // A closed channel: the store had the blob, or the upload failed
        // (its own result says so). The pass reads on and hashes.
        for tx in &self.tx {
            let _ = tx.send((bytes.clone(), held.clone()));
        }
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.unwanted() {
            return Ok(buf.len());
        }
        let mut rest = buf;
        while !rest.is_empty() {
            let n = rest.len().min(CHUNK - self.buf.len());
            self.buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if self.buf.len() == CHUNK {
                let full = std::mem::replace(&mut self.buf, self.budget.buffer());
                self.send(full);
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for ChannelWriter {
    fn drop(&mut self) {
        let last = std::mem::take(&mut self.buf);
        match !self.unwanted() && !last.is_empty() {
            true => self.send(last),
            false => self.budget.give_back(last),
        }
    }
}
