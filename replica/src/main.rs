//! `replica`: see [`replica::cli`].

fn main() {
    replica::cli::main()
}
