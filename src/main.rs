//! The `celltrail` binary: parses the command line and runs a subcommand.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    quiet_broken_pipe();
    let (cli, settings) = match celltrail::config::parse_from(std::env::args_os()) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("celltrail: {}", celltrail::client::error_chain(e.as_ref()));
            return std::process::ExitCode::from(2);
        }
    };
    celltrail::config::init_logging(&settings);
    match celltrail::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("celltrail: {}", celltrail::client::error_chain(e.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

/// `celltrail chain X | head`: when the reader of stdout goes away, stop quietly with the
/// status a shell reports for SIGPIPE (128 + 13), as `cat` does, instead of panicking in
/// `println!`. SIGPIPE itself stays ignored, so a closed network socket is still an error the
/// code handles, never a silent death.
fn quiet_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info)
    }));
}
