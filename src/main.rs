use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: sessions are created on one thread and their pieces are
/// allocated on others, which glibc's per-thread arenas keep as retained, fragmented memory.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match natter::cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
