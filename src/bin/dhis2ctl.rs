//! dhis2ctl: see `dhis2ctl --help`.
fn main() -> std::process::ExitCode {
    dhis2_operator::cli::main()
}
