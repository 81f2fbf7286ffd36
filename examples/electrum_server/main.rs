// Temporary entry point so the chain modules build and test; the server replaces it.
#[allow(dead_code)]
mod chain;
#[allow(dead_code)]
mod wallet;

fn main() {}
