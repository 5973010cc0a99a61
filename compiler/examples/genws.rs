//! Writes the benchmark's generated workspace to a directory, for profiling:
//! `cargo run --release -p eflow-compiler --example genws -- DIR MODULES`.

#[path = "../benches/support/workload.rs"]
mod workload;

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().unwrap_or_else(|| "target/genws".into()));
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
    std::fs::create_dir_all(&dir).expect("create dir");
    std::fs::write(dir.join("shared.eflow"), workload::SHARED).expect("write");
    std::fs::write(dir.join("big.eflow"), workload::big_module(40)).expect("write");
    for i in 0..n {
        std::fs::write(dir.join(format!("m{i:05}.eflow")), workload::module(i)).expect("write");
    }
}
