//! The independent peer of the signing tests: the `sigstore` crate (a Rust
//! implementation of cosign's verification, and of its key writer), never
//! the code archgate signs with. It
//! - makes key pairs as `cosign generate-key-pair` writes them (PEM
//!   `ENCRYPTED SIGSTORE PRIVATE KEY`, scrypt N=32768 r=8 p=1, secretbox);
//! - verifies what a registry holds as `cosign verify --key` does (the
//!   `sha256-HEX.sig` manifest, each layer's payload and signature), plus
//!   what containers/image's `sigstoreSigned` policy checks of a payload
//!   (its type, its digest, its identity);
//! - signs as another signer (its own key), to check archgate keeps that
//!   signature beside its own.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use sigstore::cosign::verification_constraint::{PublicKeyVerifier, VerificationConstraint};
use sigstore::cosign::{ClientBuilder, CosignCapabilities, SignatureLayer};
use sigstore::crypto::signing_key::ecdsa::{ECDSAKeys, EllipticCurve};
use sigstore::crypto::signing_key::SigStoreKeyPair;
use sigstore::registry::{Auth, ClientConfig, ClientProtocol, OciReference};

/// A key pair written to files.
pub struct Keys {
    pub private: PathBuf,
    pub public: PathBuf,
    pub passphrase: String,
}

/// A new ECDSA P-256 key pair in `dir`: `NAME.key` (encrypted with
/// `passphrase`, as cosign writes it) and `NAME.pub`.
pub fn make_keys(dir: &Path, name: &str, passphrase: &str) -> Keys {
    let keys = SigStoreKeyPair::ECDSA(ECDSAKeys::new(EllipticCurve::P256).unwrap());
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    let pem = keys
        .private_key_to_encrypted_pem(passphrase.as_bytes())
        .unwrap();
    std::fs::write(&private, pem.as_bytes()).unwrap();
    std::fs::write(&public, keys.public_key_to_pem().unwrap()).unwrap();
    Keys {
        private,
        public,
        passphrase: passphrase.to_string(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn client() -> sigstore::cosign::Client {
    ClientBuilder::default()
        .with_oci_client_config(ClientConfig {
            protocol: ClientProtocol::Http,
            ..Default::default()
        })
        .build()
        .unwrap()
}

/// What verifying a reference found: the digest it points to, and each
/// signature layer's claims.
#[derive(Debug)]
pub struct Verified {
    pub digest: String,
    pub layers: Vec<(String, String, String)>,
}

/// Verifies `image` (`HOST/PATH:TAG` or `HOST/PATH@DIGEST` on a plain-HTTP
/// registry) against the public key in `public`, as `cosign verify --key`
/// does, and requires of the layer the key signed what containers/image
/// requires: type `cosign container image signature`, the image's digest,
/// and `identity` (`HOST/PATH`) as its docker reference. `Err` says why not.
pub fn verify(image: &str, public: &Path, identity: &str) -> Result<Verified, String> {
    let reference: OciReference = image.parse().map_err(|e| format!("{image}: {e}"))?;
    let pem = std::fs::read(public).unwrap();
    runtime().block_on(async {
        let mut client = client();
        let (_, digest) = client
            .triangulate(&reference, &Auth::Anonymous)
            .await
            .map_err(|e| format!("{image}: triangulate: {e}"))?;
        let layers = client
            .trusted_signature_layers(&Auth::Anonymous, &reference)
            .await
            .map_err(|e| format!("{image}: signature layers: {e}"))?;
        let verifier = PublicKeyVerifier::try_from(&pem).map_err(|e| e.to_string())?;
        let by_key: Vec<&SignatureLayer> = layers
            .iter()
            .filter(|l| verifier.verify(l).unwrap_or(false))
            .collect();
        if by_key.is_empty() {
            return Err(format!(
                "{image}: no signature by the key among {} layer(s)",
                layers.len()
            ));
        }
        let ok = by_key.iter().any(|l| {
            let c = &l.simple_signing.critical;
            c.type_name == "cosign container image signature"
                && c.image.docker_manifest_digest == digest
                && c.identity.docker_reference == identity
        });
        if !ok {
            return Err(format!(
                "{image}: the key's signature claims something else: {by_key:?}"
            ));
        }
        Ok(Verified {
            digest,
            layers: layers
                .iter()
                .map(|l| {
                    let c = &l.simple_signing.critical;
                    (
                        l.oci_digest.clone(),
                        c.identity.docker_reference.clone(),
                        c.image.docker_manifest_digest.clone(),
                    )
                })
                .collect(),
        })
    })
}

/// Signs `digest` in `repository` (`HOST/PATH`) with `keys`, as another
/// signer, and pushes the signature the way the sigstore crate does.
pub fn sign_as_other(repository: &str, digest: &str, keys: &Keys) {
    use sigstore::cosign::constraint::{PrivateKeySigner, SignConstraintRefVec};
    use sigstore::cosign::Constraint;
    let image: OciReference = format!("{repository}@{digest}").parse().unwrap();
    let pem = std::fs::read(&keys.private).unwrap();
    runtime().block_on(async {
        let mut client = client();
        // The signature's place, named directly: the digest may not be in
        // the registry yet (a signature can come first).
        let (registry, path) = repository.split_once('/').unwrap();
        let sig_image = OciReference::with_tag(
            registry.to_string(),
            path.to_string(),
            format!("{}.sig", digest.replacen(':', "-", 1)),
        );
        let mut layer = SignatureLayer::new_unsigned(&image, digest).unwrap();
        let signer = PrivateKeySigner::new_with_raw(
            zeroize::Zeroizing::new(pem),
            zeroize::Zeroizing::new(keys.passphrase.as_bytes().to_vec()),
            &sigstore::crypto::SigningScheme::ECDSA_P256_SHA256_ASN1,
        )
        .unwrap();
        let constraints: Vec<Box<dyn Constraint>> = vec![Box::new(signer)];
        let refs: SignConstraintRefVec = constraints.iter().collect();
        for c in refs {
            c.add_constraint(&mut layer).unwrap();
        }
        client
            .push_signature(None, &Auth::Anonymous, &sig_image, vec![layer])
            .await
            .unwrap();
    });
}
