//! Whether the database server has room for a restore (pure). A restore builds the restored
//! database beside the one the target holds and then keeps that one as
//! `<target>__replaced_<time>`: the room it takes is the restored database's whole size, and a
//! volume that fills up half-way stops the server for every database on it.

use crate::output::human_bytes as human;

use super::manifest::{BackupManifest, ObjectKind};

/// How (and whether) a restore measures the room it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpaceCheck {
    /// Where the server's data directory can be measured from here (the server runs on this
    /// machine and says where its data is), check; elsewhere say it was not checked.
    #[default]
    Measure,
    /// The server's data volume holds this many bytes (the operator knows its claim): the free
    /// room is that less what the server's databases and WAL take.
    Volume { capacity_bytes: u64 },
    /// `--skip-space-check`: the operator of the server knows better.
    Skip,
}

/// The room a restore needs, and the room there is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    pub needed_bytes: u64,
    /// How `needed_bytes` was estimated.
    pub needed_from: String,
    pub free_bytes: u64,
    /// How `free_bytes` was measured.
    pub free_from: String,
    /// Databases earlier restores into this target replaced, with their sizes: room that can
    /// be given back.
    pub replaced: Vec<(String, u64)>,
}

/// Beyond the estimate, a tenth for what a restore writes besides the tables (index builds sort
/// in temporary files, the WAL of the restore itself).
const HEADROOM_PERCENT: u64 = 10;

/// Roughly what restoring `manifest` takes on a server: the database's size when it was backed
/// up, less the tables whose data was skipped; for backups made before dhis2ctl recorded that,
/// twice the dump (tables as dumped, and their indexes).
pub fn needed_for(manifest: &BackupManifest) -> (u64, String) {
    if let Some(bytes) = manifest.restored_size_bytes {
        return (
            bytes,
            "the database's size when it was backed up, less the tables whose data was skipped"
                .into(),
        );
    }
    let dump = manifest
        .object(ObjectKind::Database)
        .map(|o| o.uncompressed_bytes)
        .unwrap_or(0);
    (
        dump.saturating_mul(2),
        "twice the size of its dump (this backup predates the size record)".into(),
    )
}

/// The free room on a volume of `capacity_bytes` that holds `used_bytes` of databases and WAL.
pub fn free_on_volume(capacity_bytes: u64, used_bytes: u64) -> u64 {
    capacity_bytes.saturating_sub(used_bytes)
}

/// Ok when the restored database fits with headroom; otherwise why not and how to make room.
pub fn check_room(room: &Room, target: &str) -> Result<(), String> {
    let wanted = room
        .needed_bytes
        .saturating_add(room.needed_bytes / 100 * HEADROOM_PERCENT);
    if wanted <= room.free_bytes {
        return Ok(());
    }
    let give_back = if room.replaced.is_empty() {
        String::new()
    } else {
        let listed: Vec<String> = room
            .replaced
            .iter()
            .map(|(name, bytes)| format!("{name} ({})", human(*bytes)))
            .collect();
        format!(
            "drop databases earlier restores replaced and kept ({}: DROP DATABASE \"<name>\"), ",
            listed.join(", ")
        )
    };
    Err(format!(
        "not enough room on the database server for the restore: it builds the restored database beside {target} and keeps {target} as {target}__replaced_<time>, so it needs about {} ({}, plus {HEADROOM_PERCENT}% for index builds and WAL) and {} shows {} free. Make room first: {give_back}or grow the volume (for a Dhis2Database, spec.storage.size), then restore again; --skip-space-check (spec.skipSpaceCheck) restores anyway when you know the estimate is wrong",
        human(wanted),
        room.needed_from,
        room.free_from,
        human(room.free_bytes),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1024 * 1024 * 1024;

    fn room(needed: u64, free: u64) -> Room {
        Room {
            needed_bytes: needed,
            needed_from: "the database's size when it was backed up".into(),
            free_bytes: free,
            free_from: "the data volume (20.0 GiB)".into(),
            replaced: Vec::new(),
        }
    }

    #[test]
    fn a_restore_that_fits_with_a_tenth_to_spare_goes_ahead() {
        assert_eq!(check_room(&room(8 * GIB, 9 * GIB), "hmis"), Ok(()));
        assert_eq!(check_room(&room(0, 0), "hmis"), Ok(()));
    }

    #[test]
    fn a_restore_that_would_fill_the_volume_is_refused_saying_how_to_make_room() {
        let mut tight = room(8 * GIB, 8 * GIB);
        tight.replaced = vec![("hmis__replaced_20261201t020000z".into(), 7 * GIB)];
        let why = check_room(&tight, "hmis").unwrap_err();
        assert!(
            why.contains(&format!("about {}", human(8 * GIB + 8 * GIB / 10))),
            "{why}"
        );
        assert!(why.contains(&format!("{} free", human(8 * GIB))), "{why}");
        assert!(why.contains("the data volume (20.0 GiB)"), "{why}");
        assert!(
            why.contains(&format!(
                "hmis__replaced_20261201t020000z ({})",
                human(7 * GIB)
            )),
            "{why}"
        );
        assert!(why.contains("spec.storage.size"), "{why}");
        assert!(why.contains("--skip-space-check"), "{why}");
        let why = check_room(&room(8 * GIB, GIB), "hmis").unwrap_err();
        assert!(
            !why.contains("DROP DATABASE"),
            "nothing to give back: {why}"
        );
    }

    #[test]
    fn free_room_on_a_volume_is_what_the_databases_leave() {
        assert_eq!(free_on_volume(20 * GIB, 12 * GIB), 8 * GIB);
        assert_eq!(free_on_volume(GIB, 2 * GIB), 0);
    }
}
