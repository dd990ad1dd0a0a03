//! The `celltrail` binary: parses the command line and runs a subcommand.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let (cli, settings) = match celltrail::config::parse_from(std::env::args_os()) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("celltrail: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    celltrail::config::init_logging(&settings);
    match celltrail::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("celltrail: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
