//! Errors mailed to the operators, as fedora-messaging's `[log_config]`
//! configures Python's `logging.handlers.SMTPHandler` (FIU's file mails
//! every ERROR to its operators): `mailhost`, `fromaddr`, `toaddrs`,
//! `subject`, `level`.
//!
//! A burst of errors is not a burst of mails: the first error is mailed at
//! once; those that follow within `every` (a minute by default) wait, and
//! go in one mail when it has passed, with how many there were. A quiet
//! spell longer than `every` starts over. Mail is sent by a thread of its
//! own, over plain SMTP (as SMTPHandler does without `secure`); a mail
//! that cannot be sent is said on stderr and dropped, and never stops the
//! service.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

/// Where and how errors are mailed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailSpec {
    /// `mailhost`: the SMTP server.
    pub host: String,
    /// Its port (`mailhost = [HOST, PORT]`; 25 by default).
    pub port: u16,
    /// `fromaddr`.
    pub from: String,
    /// `toaddrs`.
    pub to: Vec<String>,
    /// `subject`.
    pub subject: String,
    /// `level`: events at this level or more severe are mailed.
    pub level: tracing::Level,
    /// Errors after the first within this long go in one later mail.
    pub every: Duration,
}

/// The most lines one mail carries (the rest are counted).
const MAX_LINES: usize = 200;

/// The longest line kept of one event.
const MAX_LINE: usize = 4_000;

/// A `tracing` layer that mails events of `level` or worse.
pub struct MailLayer {
    level: tracing::Level,
    tx: SyncSender<String>,
}

impl MailLayer {
    /// The layer, and the thread that mails for it.
    pub fn new(spec: MailSpec) -> MailLayer {
        // Bounded: a flood of errors waits for nobody; what does not fit is
        // counted in the next mail's lines as dropped.
        let (tx, rx) = mpsc::sync_channel(4_096);
        let level = spec.level;
        std::thread::Builder::new()
            .name("archgate-mail".into())
            .spawn(move || mailer(spec, rx))
            .expect("a thread for mail");
        MailLayer { level, tx }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for MailLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let meta = event.metadata();
        // Lower is more severe for tracing's levels (ERROR < WARN).
        if *meta.level() > self.level || meta.target() == archgate_native::progress::TARGET {
            return;
        }
        let mut line = Line(String::new());
        event.record(&mut line);
        let text = format!(
            "{} {} {}",
            crate::clock::rfc3339(crate::clock::now()),
            meta.level(),
            crate::retry::cut(line.0.trim(), MAX_LINE)
        );
        let _ = self.tx.try_send(text);
    }
}

/// An event's message and fields, as the log shows them.
struct Line(String);

impl tracing::field::Visit for Line {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}{}", self.0);
        } else {
            self.0.push_str(&format!(" {}={value:?}", field.name()));
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.0 = format!("{value}{}", self.0);
        } else {
            self.0.push_str(&format!(" {}={value:?}", field.name()));
        }
    }
}

/// The mail thread: the first line of a spell at once, the rest of it
/// together when `every` has passed.
fn mailer(spec: MailSpec, rx: mpsc::Receiver<String>) {
    while let Ok(first) = rx.recv() {
        send_or_say(&spec, &spec.subject, &first);
        let until = Instant::now() + spec.every;
        let mut more = Vec::new();
        let mut dropped = 0usize;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if more.len() < MAX_LINES => more.push(line),
                Ok(_) => dropped += 1,
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        if more.is_empty() {
            continue;
        }
        let count = more.len() + dropped;
        let mut body = format!(
            "{count} more error(s) in the {} after the last mail:\n\n",
            crate::retry::text(spec.every)
        );
        body.push_str(&more.join("\n"));
        if dropped > 0 {
            body.push_str(&format!("\n... and {dropped} more, not shown\n"));
        }
        let subject = format!("{} ({count} more)", spec.subject);
        send_or_say(&spec, &subject, &body);
    }
}

fn send_or_say(spec: &MailSpec, subject: &str, body: &str) {
    if let Err(e) = send(spec, subject, body) {
        eprintln!(
            "archgate: cannot mail the error to {} through {}:{}: {e}",
            spec.to.join(", "),
            spec.host,
            spec.port
        );
    }
}

/// One mail over SMTP: EHLO (HELO if refused), MAIL, RCPT, DATA, QUIT.
pub(crate) fn send(spec: &MailSpec, subject: &str, body: &str) -> std::io::Result<()> {
    use std::net::ToSocketAddrs;
    let addr = (spec.host.as_str(), spec.port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("the mail host has no address"))?;
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut smtp = Smtp {
        reader: BufReader::new(stream.try_clone()?),
        writer: stream,
    };
    smtp.expect(220)?;
    let me = match crate::hostname() {
        h if h.is_empty() => "localhost".to_string(),
        h => h,
    };
    if smtp.command(&format!("EHLO {me}"), 250).is_err() {
        smtp.command(&format!("HELO {me}"), 250)?;
    }
    smtp.command(&format!("MAIL FROM:<{}>", spec.from), 250)?;
    for to in &spec.to {
        smtp.command(&format!("RCPT TO:<{to}>"), 250)?;
    }
    smtp.command("DATA", 354)?;
    let mut message = format!(
        "From: {}\r\nTo: {}\r\nSubject: {}\r\nDate: {}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
        spec.from,
        spec.to.join(", "),
        subject.replace(['\r', '\n'], " "),
        crate::clock::rfc5322(crate::clock::now()),
    );
    for line in body.lines() {
        // A line that starts with a dot gets another (RFC 5321, 4.5.2).
        if line.starts_with('.') {
            message.push('.');
        }
        message.push_str(line);
        message.push_str("\r\n");
    }
    message.push_str(".\r\n");
    smtp.writer.write_all(message.as_bytes())?;
    smtp.expect(250)?;
    let _ = smtp.command("QUIT", 221);
    Ok(())
}

struct Smtp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Smtp {
    fn command(&mut self, line: &str, want: u16) -> std::io::Result<()> {
        self.writer.write_all(format!("{line}\r\n").as_bytes())?;
        self.expect(want)
    }

    /// Reads a reply (all its lines); `Err` unless its code is `want`.
    fn expect(&mut self, want: u16) -> std::io::Result<()> {
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::Error::other(
                    "the mail server closed the connection",
                ));
            }
            let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            // `250-...` continues; `250 ...` ends the reply.
            if line.as_bytes().get(3) == Some(&b'-') {
                continue;
            }
            return match code == want || (want == 250 && code == 251) {
                true => Ok(()),
                false => Err(std::io::Error::other(format!(
                    "the mail server answered: {}",
                    line.trim_end()
                ))),
            };
        }
    }
}
