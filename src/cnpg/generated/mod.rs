//! Generated code only: kopium's output from CloudNativePG's CRDs, written by
//! scripts/cnpg-types.sh (`--check` compares it with a fresh generation). Never edited by hand and
//! not linted; the hand-written code that uses it lives outside this folder.

#[allow(clippy::all, clippy::pedantic, rustdoc::all)]
pub mod cluster;
#[allow(clippy::all, clippy::pedantic, rustdoc::all)]
pub mod object_store;
#[allow(clippy::all, clippy::pedantic, rustdoc::all)]
pub mod scheduled_backup;
