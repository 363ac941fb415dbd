//! `kubectl dhis2 …`: the same program as dhis2ctl, under the name kubectl looks for.
fn main() -> std::process::ExitCode {
    dhis2_operator::cli::main()
}
