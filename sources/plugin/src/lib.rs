//! The `plugin` source: a shared library that implements archgate's source
//! ABI (docs/plugins.md). Loaded with libloading; the request goes in and
//! the results come out as JSON; the library frees what it allocated.
#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::ffi::{c_char, CStr, CString};
use std::path::{Path, PathBuf};

use archgate_core::{
    Arch, ArchResult, Artifact, Checksum, Compose, ComposeResults, ComposeStatus, ImageQuery,
    Location, Outcome, Source, SourceError,
};
use archgate_plugin_sdk::{ImageRequest, PluginV1, Request, Response, ABI_VERSION, ENTRY_SYMBOL};

/// A loaded plugin.
pub struct PluginSource {
    path: PathBuf,
    // Kept loaded while the table is in use.
    _library: libloading::Library,
    table: &'static PluginV1,
    name: String,
    location: Option<String>,
    settings: serde_json::Value,
}

impl PluginSource {
    /// Loads the library and checks its entry symbol and ABI version.
    pub fn load(
        path: &Path,
        location: Option<String>,
        settings: serde_json::Value,
    ) -> Result<PluginSource, SourceError> {
        let err = |msg: String| SourceError(format!("plugin {}: {msg}", path.display()));
        if !path.exists() {
            return Err(err("no such file".into()));
        }
        // SAFETY: loading a library runs its initializers; archgate trusts the
        // library the configuration names, as it would a credential helper.
        let library = unsafe { libloading::Library::new(path) }
            .map_err(|e| err(format!("cannot load it as a shared library: {e}")))?;
        let table = {
            // SAFETY: the symbol's type is the ABI's: no arguments, returns a
            // pointer to a static table.
            let entry: libloading::Symbol<'_, extern "C" fn() -> *const PluginV1> =
                unsafe { library.get(ENTRY_SYMBOL.as_bytes()) }.map_err(|_| {
                    err(format!(
                        "no `{ENTRY_SYMBOL}` symbol: not an archgate plugin"
                    ))
                })?;
            let ptr = entry();
            if ptr.is_null() {
                return Err(err(format!("`{ENTRY_SYMBOL}` returned null")));
            }
            // SAFETY: the ABI says the table is static for the library's lifetime,
            // and the library is kept loaded as long as `self`.
            unsafe { &*ptr }
        };
        if table.abi_version != ABI_VERSION {
            return Err(err(format!(
                "it speaks ABI version {}; this archgate speaks version {ABI_VERSION}",
                table.abi_version
            )));
        }
        let name = if table.name.is_null() {
            "(unnamed)".to_string()
        } else {
            // SAFETY: the ABI says `name` is a static NUL-terminated string.
            unsafe { CStr::from_ptr(table.name) }
                .to_string_lossy()
                .into_owned()
        };
        Ok(PluginSource {
            path: path.to_path_buf(),
            _library: library,
            table,
            name,
            location,
            settings,
        })
    }

    /// The name the plugin gives.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The ABI version it speaks.
    pub fn abi_version(&self) -> u32 {
        self.table.abi_version
    }

    /// An error naming the plugin; what the plugin says is shown escaped.
    fn err(&self, msg: impl std::fmt::Display) -> SourceError {
        SourceError(format!(
            "plugin {} ({}): {}",
            self.path.display(),
            archgate_core::untrusted(&self.name),
            archgate_core::untrusted(&msg.to_string())
        ))
    }

    /// Calls `load` and returns the raw response.
    fn call(&self, images: &[ImageQuery]) -> Result<String, SourceError> {
        let request = Request {
            abi_version: ABI_VERSION,
            location: self.location.clone(),
            settings: self.settings.clone(),
            images: images
                .iter()
                .map(|i| ImageRequest {
                    name: i.name.clone(),
                    matcher: i.matcher.clone(),
                })
                .collect(),
        };
        let request = CString::new(serde_json::to_string(&request).expect("a request serializes"))
            .map_err(|e| self.err(e))?;
        let out: *mut c_char = (self.table.load)(request.as_ptr());
        if out.is_null() {
            return Err(self.err("load returned null"));
        }
        // SAFETY: the ABI says `load` returns a NUL-terminated string that stays
        // valid until it is given back to `free_string`.
        let text = unsafe { CStr::from_ptr(out) }
            .to_string_lossy()
            .into_owned();
        (self.table.free_string)(out);
        Ok(text)
    }
}

fn outcome(image: &str, r: &archgate_plugin_sdk::ArchResult) -> Result<Outcome, String> {
    match (&r.built, &r.failed) {
        (Some(b), None) => {
            let location =
                if b.location.starts_with("http://") || b.location.starts_with("https://") {
                    Location::Url(b.location.clone())
                } else {
                    Location::Path(PathBuf::from(&b.location))
                };
            let checksum = match &b.sha256 {
                Some(hex) => Some(
                    Checksum::new("sha256", hex)
                        .expect("sha256 is a known algorithm")
                        .map_err(|e| format!("image {image}, arch {}: {e}", r.arch))?,
                ),
                None => None,
            };
            Ok(Outcome::Built(Artifact {
                location,
                checksum,
                size: b.size,
                unverified: None,
            }))
        }
        (None, Some(reason)) => Ok(Outcome::Failed {
            reason: archgate_core::untrusted(reason),
        }),
        _ => Err(format!(
            "image {image}, arch {}: give exactly one of `built` and `failed`",
            r.arch
        )),
    }
}

impl Source for PluginSource {
    fn load(&self, images: &[ImageQuery]) -> Result<ComposeResults, SourceError> {
        let text = self.call(images)?;
        let response: Response = serde_json::from_str(&text).map_err(|e| {
            self.err(format!(
                "its answer does not follow the ABI's JSON schema: {e}"
            ))
        })?;
        let compose = match response {
            Response::Ok(c) => c,
            Response::Error(e) => return Err(self.err(e)),
        };
        let mut out = BTreeMap::new();
        for query in images {
            let mut results = Vec::new();
            for r in compose
                .images
                .get(&query.name)
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let arch: Arch = r
                    .arch
                    .parse()
                    .map_err(|e| self.err(format!("image {}: {e}", query.name)))?;
                results.push(ArchResult {
                    arch,
                    outcome: outcome(&query.name, r).map_err(|e| self.err(e))?,
                });
            }
            out.insert(query.name.clone(), results);
        }
        let mut c = Compose::from_id(&compose.id, ComposeStatus::parse(&compose.status));
        c.release = compose.release.map(|r| r.to_lowercase());
        if compose.date.is_some() {
            c.date = compose.date;
        }
        if compose.respin.is_some() {
            c.respin = compose.respin;
        }
        Ok(ComposeResults {
            compose: c,
            images: out,
        })
    }
}
