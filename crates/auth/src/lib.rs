//! Control-plane authentication building blocks, pure and I/O-free.
//!
//! [`sigv4`] verifies AWS Signature Version 4 requests (the `Authorization` header form and
//! presigned query strings) the way App Mesh and Cloud Map answer them. It is deliberately a
//! verifier written for this crate rather than a wrapper of `aws-sigv4` or
//! `scratchstack-aws-signature`: `aws-sigv4` is a signer (it cannot report *why* a request is
//! refused, and pulls in the smithy runtime), and the server needs the verifier's own error
//! cases mapped one to one onto AWS's exception names. `aws-sigv4` and botocore are used in
//! the tests as the reference signers.
//!
//! [`sign`] is the matching signer for meshplane's own clients; it shares the verifier's
//! canonical request code, so the two cannot drift.
//!
//! [`seal`] seals secrets at rest (access key secrets, the CA's private key) under the data
//! directory's key file.
//!
//! [`token`] mints and verifies the node-bound tokens an Envoy presents on its ADS stream.
//!
//! Architecture Invariant: no I/O (beyond the system CSPRNG), no async, no clock reads. The caller passes the request
//! view, the payload (or its hash), the current time and a [`sigv4::SecretLookup`].
#![forbid(unsafe_code)]

pub mod seal;
pub mod sign;
pub mod sigv4;
pub mod token;
