//! The primitives of GameStream pairing: SHA-256, AES-128-ECB without padding, RSA PKCS#1 v1.5
//! signatures with SHA-256, and the raw signature bytes of an X.509 certificate; and the session
//! key as the AES-128-GCM key that RTSP, the control stream and video share ([`session_key`]).
//!
//! AES-128-ECB is what the protocol prescribes for the pairing blobs (each a multiple of 16
//! bytes); it is used for nothing else. ring provides SHA-256 and RSA; the `aes` crate the
//! single-block cipher ring does not expose; `x509-parser` reads certificates.

use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use ring::signature::{self, RsaKeyPair};
use thiserror::Error;

/// The launch key `K_s` (`rikey`) as an AES-128-GCM key.
pub fn session_key(k: &[u8; 16]) -> ring::aead::LessSafeKey {
    ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::AES_128_GCM, k).expect("16-byte key"),
    )
}

/// Cryptographic failures during pairing.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CryptoError {
    /// A certificate that does not parse.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The host key is not a usable RSA key.
    #[error("host key: {0}")]
    Key(String),
    /// An encrypted blob that is not a multiple of 16 bytes.
    #[error("encrypted data of {0} bytes is not a whole number of AES blocks")]
    BlockLength(usize),
}

/// SHA-256 over the concatenation of `parts`.
pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    ctx.finish()
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

/// The AES-128 key of a pairing: the first 16 bytes of SHA-256(salt ‖ PIN as ASCII).
pub fn pin_key(salt: &[u8; 16], pin: &str) -> [u8; 16] {
    sha256(&[salt, pin.as_bytes()])[..16]
        .try_into()
        .expect("16 bytes")
}

/// AES-128-ECB encryption in place, no padding.
pub fn ecb_encrypt(key: &[u8; 16], data: &mut [u8]) -> Result<(), CryptoError> {
    ecb(key, data, |c, b| c.encrypt_block(b.into()))
}

/// AES-128-ECB decryption in place, no padding.
pub fn ecb_decrypt(key: &[u8; 16], data: &mut [u8]) -> Result<(), CryptoError> {
    ecb(key, data, |c, b| c.decrypt_block(b.into()))
}

fn ecb(
    key: &[u8; 16],
    data: &mut [u8],
    block: impl Fn(&aes::Aes128, &mut [u8]),
) -> Result<(), CryptoError> {
    if !data.len().is_multiple_of(16) {
        return Err(CryptoError::BlockLength(data.len()));
    }
    let c = aes::Aes128::new(key.into());
    data.chunks_exact_mut(16).for_each(|b| block(&c, b));
    Ok(())
}

/// What pairing needs from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The outer `signatureValue` bits (256 bytes for an RSA-2048 signature).
    pub signature: Vec<u8>,
    /// The subject public key (for RSA: the `RSAPublicKey` DER).
    pub public_key: Vec<u8>,
    /// Whether the public key is RSA.
    pub is_rsa: bool,
}

impl CertInfo {
    /// Reads a DER certificate.
    pub fn parse(der: &[u8]) -> Result<CertInfo, CryptoError> {
        let (rest, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| CryptoError::Certificate(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CryptoError::Certificate("trailing bytes".into()));
        }
        let spki = &cert.tbs_certificate.subject_pki;
        Ok(CertInfo {
            signature: cert.signature_value.data.to_vec(),
            public_key: spki.subject_public_key.data.to_vec(),
            is_rsa: spki.algorithm.algorithm == x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION,
        })
    }

    /// Checks an RSA PKCS#1 v1.5 SHA-256 signature made with this certificate's key.
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        self.is_rsa
            && signature::UnparsedPublicKey::new(
                &signature::RSA_PKCS1_2048_8192_SHA256,
                &self.public_key,
            )
            .verify(message, sig)
            .is_ok()
    }
}

/// An RSA private key that signs with PKCS#1 v1.5 and SHA-256.
pub struct Signer {
    key: RsaKeyPair,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("bits", &(self.key.public().modulus_len() * 8))
            .finish()
    }
}

impl Signer {
    /// From a PKCS#8 DER RSA key.
    pub fn from_pkcs8(der: &[u8]) -> Result<Signer, CryptoError> {
        let key = RsaKeyPair::from_pkcs8(der).map_err(|e| CryptoError::Key(e.to_string()))?;
        Ok(Signer { key })
    }

    /// The signature of `message` (modulus-sized: 256 bytes for RSA-2048).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                message,
                &mut sig,
            )
            .expect("PKCS#1 v1.5 signing with a valid key and a modulus-sized buffer");
        sig
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.key.public().modulus_len() * 8
    }
}

/// A DER certificate as PEM text.
pub fn cert_to_pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

/// The first certificate of PEM text, as DER.
pub fn cert_from_pem(text: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let p = pem::parse(text).map_err(|e| CryptoError::Certificate(e.to_string()))?;
    if p.tag() != "CERTIFICATE" {
        return Err(CryptoError::Certificate(format!(
            "PEM block is {:?}, not a certificate",
            p.tag()
        )));
    }
    Ok(p.into_contents())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecb_known_answer() {
        // FIPS-197 appendix C.1 (AES-128): one block, key 000102…0f.
        let key: [u8; 16] = core::array::from_fn(|i| i as u8);
        let mut block: [u8; 16] = core::array::from_fn(|i| (i as u8) * 0x11);
        ecb_encrypt(&key, &mut block).unwrap();
        assert_eq!(
            crate::hex_encode(&block),
            "69C4E0D86A7B0430D8CDB78070B4C55A"
        );
        ecb_decrypt(&key, &mut block).unwrap();
        assert_eq!(block[1], 0x11);
        assert_eq!(
            ecb_encrypt(&key, &mut [0u8; 15]),
            Err(CryptoError::BlockLength(15))
        );
    }

    #[test]
    fn pin_key_is_sha256_of_salt_and_pin() {
        let salt = [0u8; 16];
        // SHA-256 of 16 zero bytes followed by "1234", first 16 bytes.
        let mut v = vec![0u8; 16];
        v.extend_from_slice(b"1234");
        assert_eq!(pin_key(&salt, "1234"), sha256(&[&v])[..16]);
        assert_ne!(pin_key(&salt, "1234"), pin_key(&salt, "1235"));
        assert_eq!(
            crate::hex_encode(&sha256(&[b"abc"])),
            "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD"
        );
    }

    #[test]
    fn garbage_certificates_are_errors() {
        assert!(CertInfo::parse(&[0x30, 0x03, 1, 2, 3]).is_err());
        assert!(cert_from_pem(b"not pem").is_err());
        assert!(Signer::from_pkcs8(&[1, 2, 3]).is_err());
    }
}
