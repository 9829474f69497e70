use std::process::ExitCode;

use mishards::cli::{self, CliError};
use mishards::config::ProcessEnv;

// mimalloc: a request allocates and frees many small buffers on several threads, which glibc's
// malloc serves more slowly (BENCHMARKS.md, "What the gateway costs").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let mut stdout = std::io::stdout();
    match cli::run(std::env::args_os().collect(), &ProcessEnv, &mut stdout).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Usage(e)) => e.exit(),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
