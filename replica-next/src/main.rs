//! `replica-next`: the next release of `replica` (see `replica::cli`). A release package
//! made with `testnet package --next-release` carries it as `bin/replica`.

fn main() {
    replica_next::cli::main()
}
