//! Links the agent's hot code together (see packaging/hot-text/README.md).

use std::path::Path;

fn main() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/hot-text/benchtel-agent.ld");
    println!("cargo::rerun-if-changed={}", script.display());
    if std::env::var("PROFILE").as_deref() == Ok("release")
        && std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
    {
        println!(
            "cargo::rustc-link-arg-bin=benchtel-agent=-Wl,-T,{}",
            script.display()
        );
    }
}
