//! The `broker` binary. Work in progress: see issue 3.

fn main() {
    eprintln!("broker: not built yet (issue 3)");
    std::process::exit(2);
}
