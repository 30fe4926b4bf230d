//! Write an archgate source plugin in Rust: one function and one macro line.
//!
//! ```ignore
//! use archgate_plugin_sdk::{export_plugin, Request, Compose, ArchResult};
//!
//! fn load(req: &Request) -> Result<Compose, String> {
//!     let mut compose = Compose::new("MyDistro-1-20241101.0", "FINISHED");
//!     compose.release = Some("1".into());
//!     for image in &req.images {
//!         compose.add(&image.name, ArchResult::built("x86_64", "/builds/x86_64.oci.tar.xz"));
//!     }
//!     Ok(compose)
//! }
//!
//! export_plugin!("mydistro", load);
//! ```
//!
//! Build it as a `cdylib` and point `[source] library` at the `.so`. The ABI
//! (one symbol, JSON across it, who frees what) is described in
//! `docs/plugins.md`; this crate implements it, and catches panics at the
//! boundary so that a panicking plugin becomes an error, not a crash.
#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::ffi::{c_char, CStr, CString};

use serde::{Deserialize, Serialize};

/// The ABI version this SDK speaks.
pub const ABI_VERSION: u32 = 1;

/// The one symbol archgate looks up.
pub const ENTRY_SYMBOL: &str = "archgate_plugin_entry";

/// What the entry symbol returns: a static table.
#[repr(C)]
pub struct PluginV1 {
    /// Must be [`ABI_VERSION`]; archgate refuses other values.
    pub abi_version: u32,
    /// NUL-terminated, static: the plugin's name.
    pub name: *const c_char,
    /// Takes the request (JSON, NUL-terminated, owned by archgate, valid for
    /// the call) and returns the response (JSON, NUL-terminated, allocated by
    /// the plugin; archgate hands it back to `free_string`). Never null.
    pub load: extern "C" fn(request: *const c_char) -> *mut c_char,
    /// Frees a string that `load` returned.
    pub free_string: extern "C" fn(s: *mut c_char),
}

// The table holds only static data and function pointers.
unsafe impl Sync for PluginV1 {}

/// What archgate asks for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The ABI version the plugin speaks.
    pub abi_version: u32,
    /// `[source] location` or `--compose`, if given.
    pub location: Option<String>,
    /// `[source] settings`, as JSON.
    #[serde(default)]
    pub settings: serde_json::Value,
    /// The configured images.
    pub images: Vec<ImageRequest>,
}

/// One image archgate asks for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRequest {
    /// The image's name.
    pub name: String,
    /// The image's `match` table.
    #[serde(default, rename = "match")]
    pub matcher: BTreeMap<String, String>,
}

/// What the plugin answers: exactly one of `ok` or `error`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum Response {
    /// The compose.
    Ok(Compose),
    /// Why the compose cannot be read (archgate exits 1 with it).
    Error(String),
}

/// The compose and, per image name, one result per arch.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compose {
    /// The compose id.
    pub id: String,
    /// FINISHED, FINISHED_INCOMPLETE, STARTED, DOOMED, TERMINATED.
    pub status: String,
    /// The release version (`41`, `rawhide`).
    #[serde(default)]
    pub release: Option<String>,
    /// `YYYYMMDD`: `{date}` and the compose order.
    #[serde(default)]
    pub date: Option<String>,
    /// The respin: `{respin}` and the compose order.
    #[serde(default)]
    pub respin: Option<u32>,
    /// Per image name, one result per arch.
    #[serde(default)]
    pub images: BTreeMap<String, Vec<ArchResult>>,
}

impl Compose {
    /// A compose with no results yet.
    pub fn new(id: &str, status: &str) -> Compose {
        Compose {
            id: id.into(),
            status: status.into(),
            release: None,
            date: None,
            respin: None,
            images: BTreeMap::new(),
        }
    }

    /// Adds an arch's result to an image.
    pub fn add(&mut self, image: &str, result: ArchResult) {
        self.images
            .entry(image.to_string())
            .or_default()
            .push(result);
    }
}

/// One arch: built (with its artifact) or failed (with the reason).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchResult {
    /// The compose arch (`x86_64`, ...).
    pub arch: String,
    /// Built: the artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub built: Option<Built>,
    /// Failed: the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

/// A built artifact.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Built {
    /// A local path or an http(s) URL of the artifact.
    pub location: String,
    /// Its sha256, checked while it is read.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Its size in bytes.
    #[serde(default)]
    pub size: Option<u64>,
}

impl ArchResult {
    /// A built arch: its artifact's path or URL.
    pub fn built(arch: &str, location: &str) -> ArchResult {
        ArchResult {
            arch: arch.into(),
            built: Some(Built {
                location: location.into(),
                sha256: None,
                size: None,
            }),
            failed: None,
        }
    }

    /// A failed arch and why.
    pub fn failed(arch: &str, reason: &str) -> ArchResult {
        ArchResult {
            arch: arch.into(),
            built: None,
            failed: Some(reason.into()),
        }
    }
}

/// The body of `load` for a plugin function: parses the request, calls the
/// function with panics caught, and returns the response as a C string.
/// Used by [`export_plugin!`].
///
/// # Safety
/// `request` is null or a NUL-terminated string valid for the call.
pub unsafe fn run(
    request: *const c_char,
    f: fn(&Request) -> Result<Compose, String>,
) -> *mut c_char {
    // The panic becomes the error; it is not printed on archgate's stderr.
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let response = std::panic::catch_unwind(|| {
        if request.is_null() {
            return Response::Error("the request is null".into());
        }
        // SAFETY: archgate passes a NUL-terminated string valid for the call.
        let text = unsafe { CStr::from_ptr(request) }
            .to_string_lossy()
            .into_owned();
        match serde_json::from_str::<Request>(&text) {
            Ok(req) => match f(&req) {
                Ok(c) => Response::Ok(c),
                Err(e) => Response::Error(e),
            },
            Err(e) => Response::Error(format!("the plugin cannot read the request: {e}")),
        }
    })
    .unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Response::Error(format!("the plugin panicked: {what}"))
    });
    std::panic::set_hook(previous_hook);
    let json = serde_json::to_string(&response)
        .unwrap_or_else(|_| r#"{"error":"the plugin cannot write its response"}"#.into());
    CString::new(json)
        .unwrap_or_else(|_| {
            CString::new(r#"{"error":"the response holds a NUL byte"}"#).expect("no NUL")
        })
        .into_raw()
}

/// Frees a string made by [`run`]. Used by [`export_plugin!`].
///
/// # Safety
/// `s` is null or a string [`run`] returned, not freed before.
pub unsafe fn free(s: *mut c_char) {
    if !s.is_null() {
        // SAFETY: `s` came from `CString::into_raw` in `run`.
        drop(unsafe { CString::from_raw(s) });
    }
}

/// Exports a plugin: `export_plugin!("name", load_function);`
#[macro_export]
macro_rules! export_plugin {
    ($name:literal, $load:path) => {
        extern "C" fn __archgate_load(
            request: *const ::std::ffi::c_char,
        ) -> *mut ::std::ffi::c_char {
            // SAFETY: archgate passes a NUL-terminated request valid for the call.
            unsafe { $crate::run(request, $load) }
        }
        extern "C" fn __archgate_free(s: *mut ::std::ffi::c_char) {
            // SAFETY: archgate gives back only strings this plugin returned.
            unsafe { $crate::free(s) }
        }
        static __ARCHGATE_PLUGIN: $crate::PluginV1 = $crate::PluginV1 {
            abi_version: $crate::ABI_VERSION,
            name: concat!($name, "\0").as_ptr() as *const ::std::ffi::c_char,
            load: __archgate_load,
            free_string: __archgate_free,
        };
        /// The entry symbol archgate looks up.
        #[no_mangle]
        pub extern "C" fn archgate_plugin_entry() -> *const $crate::PluginV1 {
            &__ARCHGATE_PLUGIN
        }
    };
}
