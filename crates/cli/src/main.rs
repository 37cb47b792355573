//! The `quorumca` binary. Thin on purpose: parse arguments, set up logging,
//! hand over to `quorumca_cli`.
use clap::Parser;

/// mimalloc instead of glibc's malloc: under load a node allocates and
/// frees many small buffers across threads (gRPC frames, log entries), and
/// glibc's allocator cost about 13 % of a 3-node cluster's CPU in
/// `benches/compare`; with mimalloc raw proposals went up about 20 %.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = quorumca_cli::Cli::parse();
    quorumca_cli::init_logging(&cli);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(quorumca_cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", quorumca_cli::render_error(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
