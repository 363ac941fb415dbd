//! Demo data: DHIS2-shaped databases for trying dhis2ctl out and for benchmarks.

pub mod seed;
