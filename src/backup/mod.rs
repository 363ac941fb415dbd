//! The DHIS2 backup engine. The same code runs from `dhis2ctl` on a plain server and inside the
//! operator's Jobs.
//!
//! A backup set lives under `INSTANCE/ID/` in a repository: `database.pgdump.zst` (pg_dump custom
//! format, zstd), `filestore.tar.zst`, `dhis.conf.zst`, and `manifest.json`, written last. An
//! encrypted backup's objects are age files with `.age` appended (`database.pgdump.zst.age`).

pub mod catalog;
pub mod copy;
pub mod drill;
pub mod encryption;
pub mod error;
pub mod file_restore;
pub mod inventory;
pub mod lease;
pub mod manifest;
pub mod object_lock;
pub mod object_reader;
pub mod pg_tools;
pub mod prune;
pub mod repo;
pub mod restore;
pub mod restore_plan;
pub mod retention;
pub mod room_check;
pub mod run;
pub mod schema_version;
pub mod side_database;
pub mod store;
pub mod stream;
pub mod table_rules;
pub mod verify;

pub use error::BackupError;
