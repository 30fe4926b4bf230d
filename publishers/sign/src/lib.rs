//! Sigstore signatures in the form cosign and containers/image read and
//! write (docs/configuration.md, `[sign]`): no I/O but reading key files.
//!
//! - [`SigningKey::read`]: an encrypted private key as `cosign
//!   generate-key-pair` and `skopeo generate-sigstore-key` write it (PEM
//!   `ENCRYPTED SIGSTORE PRIVATE KEY`, or the older `ENCRYPTED COSIGN
//!   PRIVATE KEY`: base64 JSON with an scrypt KDF and a NaCl secretbox around
//!   the PKCS#8 DER of an ECDSA P-256 key).
//! - [`VerifyingKey::read`]: a PEM `PUBLIC KEY` (PKIX).
//! - [`payload`]: the simple-signing payload of a manifest digest in a
//!   repository; [`SigningKey::sign`] signs it (ECDSA P-256 with SHA-256,
//!   ASN.1 DER, base64, as the layer annotation [`SIGNATURE_ANNOTATION`]
//!   carries it); [`VerifyingKey::verify`] checks one.
//! - [`signature_tag`]: where the signatures of a digest live
//!   (`sha256-HEX.sig`), and [`config_for`] the config of a signature
//!   manifest.
//!
//! The cryptography is RustCrypto's (p256, scrypt, crypto_secretbox).
#![warn(missing_docs)]

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use serde::Deserialize;
use sha2::Digest as _;

/// The media type of a simple-signing payload layer.
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation that carries the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The `critical.type` of a container image signature.
pub const SIGNATURE_TYPE: &str = "cosign container image signature";

/// A key that cannot be used: the file, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError(pub String);

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KeyError {}

/// A passphrase: never printed.
#[derive(Clone, Default)]
pub struct Passphrase(String);

impl Passphrase {
    /// A passphrase holding `text`.
    pub fn new(text: impl Into<String>) -> Passphrase {
        Passphrase(text.into())
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A private key that signs, read and decrypted.
#[derive(Clone)]
pub struct SigningKey {
    key: p256::ecdsa::SigningKey,
    /// The file it was read from, for messages.
    pub file: PathBuf,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.file.display())
    }
}

/// The largest key file read.
const MAX_KEY_FILE: u64 = 64 << 10;

fn read_text(path: &Path) -> Result<String, KeyError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| KeyError(format!("{}: cannot read: {e}", path.display())))?;
    if !meta.is_file() || meta.len() > MAX_KEY_FILE {
        return Err(KeyError(format!(
            "{}: not a key file (not a regular file, or larger than {MAX_KEY_FILE} bytes)",
            path.display()
        )));
    }
    std::fs::read_to_string(path)
        .map_err(|e| KeyError(format!("{}: cannot read: {e}", path.display())))
}

/// The base64 body of the first PEM block of one of `labels`.
fn pem_body(text: &str, labels: &[&str]) -> Option<(String, Vec<u8>)> {
    for label in labels {
        let begin = format!("-----BEGIN {label}-----");
        let end = format!("-----END {label}-----");
        let Some(start) = text.find(&begin) else {
            continue;
        };
        let rest = &text[start + begin.len()..];
        let body: String = rest[..rest.find(&end)?]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(body)
            .ok()?;
        return Some((label.to_string(), bytes));
    }
    None
}

#[derive(Deserialize)]
struct Envelope {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

#[derive(Deserialize)]
struct Kdf {
    name: String,
    params: KdfParams,
    salt: String,
}

#[derive(Deserialize, Clone)]
struct KdfParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}

/// An encrypted private key as cosign writes it, read and checked but not
/// decrypted yet: decrypting (scrypt) costs about 0.1 s of CPU, and can be
/// done while other work goes on.
#[derive(Clone)]
pub struct EncryptedKey {
    file: std::path::PathBuf,
    params: KdfParams,
    salt: Vec<u8>,
    nonce: Vec<u8>,
    sealed: Vec<u8>,
}

impl std::fmt::Debug for EncryptedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EncryptedKey({})", self.file.display())
    }
}

impl EncryptedKey {
    /// Reads the encrypted private key at `path`: a missing file or one
    /// that is not such a key is an error naming the file.
    pub fn read(path: &Path) -> Result<EncryptedKey, KeyError> {
        let bad = |why: &str| KeyError(format!("{}: {why}", path.display()));
        let text = read_text(path)?;
        let labels = [
            "ENCRYPTED SIGSTORE PRIVATE KEY",
            "ENCRYPTED COSIGN PRIVATE KEY",
        ];
        let (_, json) = pem_body(&text, &labels).ok_or_else(|| {
            bad("not an encrypted sigstore private key (no PEM `ENCRYPTED SIGSTORE PRIVATE KEY` or `ENCRYPTED COSIGN PRIVATE KEY` block); make one with `cosign generate-key-pair` or `skopeo generate-sigstore-key`")
        })?;
        let env: Envelope = serde_json::from_slice(&json).map_err(|e| {
            bad(&format!(
                "the key's envelope is not what cosign writes: {e}"
            ))
        })?;
        if env.kdf.name != "scrypt" || env.cipher.name != "nacl/secretbox" {
            return Err(bad(&format!(
                "the key is encrypted with {} and {}; archgate reads scrypt and nacl/secretbox",
                env.kdf.name, env.cipher.name
            )));
        }
        let b64 = |s: &str, what: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|_| bad(&format!("the key's {what} is not base64")))
        };
        Ok(EncryptedKey {
            file: path.to_path_buf(),
            params: env.kdf.params,
            salt: b64(&env.kdf.salt, "salt")?,
            nonce: b64(&env.cipher.nonce, "nonce")?,
            sealed: b64(&env.ciphertext, "ciphertext")?,
        })
    }

    /// Decrypts it: a wrong passphrase says so (and never shows it); every
    /// error names the file.
    pub fn decrypt(&self, passphrase: &Passphrase) -> Result<SigningKey, KeyError> {
        let bad = |why: &str| KeyError(format!("{}: {why}", self.file.display()));
        let secret = open(
            &self.params,
            &self.salt,
            &self.nonce,
            &self.sealed,
            passphrase,
        )
        .map_err(|why| bad(&why))?;
        use p256::pkcs8::DecodePrivateKey as _;
        let key = p256::ecdsa::SigningKey::from_pkcs8_der(&secret)
            .map_err(|_| bad("the decrypted key is not an ECDSA P-256 private key"))?;
        Ok(SigningKey {
            key,
            file: self.file.clone(),
        })
    }
}

impl SigningKey {
    /// Reads and decrypts the encrypted private key at `path`. Every error
    /// names the file; a wrong passphrase says so (and never shows it).
    pub fn read(path: &Path, passphrase: &Passphrase) -> Result<SigningKey, KeyError> {
        EncryptedKey::read(path)?.decrypt(passphrase)
    }

    /// The key's public half.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey(*self.key.verifying_key())
    }

    /// The base64 of the ASN.1 DER ECDSA-SHA256 signature over `payload`.
    pub fn sign(&self, payload: &[u8]) -> String {
        let signature: p256::ecdsa::Signature = self.key.sign(payload);
        base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
    }
}

/// scrypt, then the secretbox: the PKCS#8 DER inside.
fn open(
    params: &KdfParams,
    salt: &[u8],
    nonce: &[u8],
    sealed: &[u8],
    passphrase: &Passphrase,
) -> Result<Vec<u8>, String> {
    use crypto_secretbox::aead::{Aead as _, KeyInit as _};
    if !params.n.is_power_of_two() || params.n < 2 || params.n > 1 << 20 {
        return Err(format!(
            "scrypt N = {} is not a power of two up to 2^20",
            params.n
        ));
    }
    let log_n = params.n.trailing_zeros() as u8;
    let scrypt_params = scrypt::Params::new(log_n, params.r, params.p, 32)
        .map_err(|e| format!("scrypt parameters: {e}"))?;
    let mut key = [0u8; 32];
    scrypt::scrypt(passphrase.0.as_bytes(), salt, &scrypt_params, &mut key)
        .map_err(|e| format!("scrypt: {e}"))?;
    if nonce.len() != 24 {
        return Err("the key's nonce is not 24 bytes".into());
    }
    let cipher = crypto_secretbox::XSalsa20Poly1305::new(&key.into());
    cipher
        .decrypt(crypto_secretbox::Nonce::from_slice(nonce), sealed)
        .map_err(|_| {
            "cannot decrypt the key: wrong passphrase (passphrase-file or passphrase-env), or a damaged key".to_string()
        })
}

/// A public key that verifies.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyingKey(p256::ecdsa::VerifyingKey);

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VerifyingKey(P-256)")
    }
}

impl VerifyingKey {
    /// Reads a PEM `PUBLIC KEY` (PKIX), as `cosign generate-key-pair` writes
    /// `cosign.pub`.
    pub fn read(path: &Path) -> Result<VerifyingKey, KeyError> {
        let text = read_text(path)?;
        VerifyingKey::from_pem(&text).ok_or_else(|| {
            KeyError(format!(
                "{}: not a PEM ECDSA P-256 public key",
                path.display()
            ))
        })
    }

    /// From PEM text.
    pub fn from_pem(text: &str) -> Option<VerifyingKey> {
        use p256::pkcs8::DecodePublicKey as _;
        p256::ecdsa::VerifyingKey::from_public_key_pem(text.trim())
            .ok()
            .map(VerifyingKey)
    }

    /// Whether `signature` (base64 DER, as in [`SIGNATURE_ANNOTATION`]) is
    /// this key's over `payload`.
    pub fn verify(&self, payload: &[u8], signature: &str) -> bool {
        let Ok(der) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
            return false;
        };
        let Ok(signature) = p256::ecdsa::Signature::from_der(&der) else {
            return false;
        };
        self.0.verify(payload, &signature).is_ok()
    }

    /// The PEM text.
    pub fn to_pem(&self) -> String {
        use p256::pkcs8::EncodePublicKey as _;
        self.0
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .unwrap_or_default()
    }
}

/// The simple-signing payload that signs `digest` in `repository`
/// (`HOST/PATH`, no tag), as cosign writes it.
pub fn payload(repository: &str, digest: &str) -> Vec<u8> {
    serde_json::json!({
        "critical": {
            "identity": {"docker-reference": repository},
            "image": {"docker-manifest-digest": digest},
            "type": SIGNATURE_TYPE,
        },
        "optional": null,
    })
    .to_string()
    .into_bytes()
}

/// What a payload claims, if it is a container image signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// `critical.identity.docker-reference`.
    pub repository: String,
    /// `critical.image.docker-manifest-digest`.
    pub digest: String,
}

/// Reads a payload: `None` when it is not a container image signature.
pub fn claim(payload: &[u8]) -> Option<Claim> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let critical = &v["critical"];
    (critical["type"] == SIGNATURE_TYPE).then(|| Claim {
        repository: critical["identity"]["docker-reference"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        digest: critical["image"]["docker-manifest-digest"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    })
}

/// The tag the signatures of `digest` live under: `sha256-HEX.sig`.
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replacen(':', "-", 1))
}

/// `sha256:HEX` of bytes.
pub fn digest_of(bytes: &[u8]) -> String {
    let hash = sha2::Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The config of a signature manifest whose layers are `layers` (their
/// digests, in order), as cosign writes it.
pub fn config_for(layers: &[String]) -> Vec<u8> {
    serde_json::json!({
        "architecture": "",
        "config": {},
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": layers},
    })
    .to_string()
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_read_back_and_tags_are_cosigns() {
        let p = payload("registry.example.org/fedora", "sha256:abc");
        assert_eq!(
            claim(&p),
            Some(Claim {
                repository: "registry.example.org/fedora".into(),
                digest: "sha256:abc".into()
            })
        );
        assert_eq!(claim(b"{\"critical\":{\"type\":\"other\"}}"), None);
        assert_eq!(signature_tag("sha256:0123"), "sha256-0123.sig");
        assert_eq!(
            digest_of(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn not_a_key_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k.pem");
        std::fs::write(&f, "hello").unwrap();
        let e = SigningKey::read(&f, &Passphrase::new("x")).unwrap_err();
        assert!(e.0.starts_with(&f.display().to_string()), "{e}");
        assert!(e.0.contains("not an encrypted sigstore private key"), "{e}");
        let e = VerifyingKey::read(&f).unwrap_err();
        assert!(e.0.contains("not a PEM ECDSA P-256 public key"), "{e}");
        assert_eq!(format!("{:?}", Passphrase::new("s3cret")), "***");
    }
}
