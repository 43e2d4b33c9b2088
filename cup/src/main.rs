//! `cup inspect FILE [--subnet-key HEX] [--json]`: prints a CUP's fields and whether its
//! signature is valid. Exit codes (as `nns`'s, which has a third, 3, for an unreachable
//! server): 0 valid (or not checked), 1 refused: an invalid signature, 2 a bad argument:
//! an unreadable or corrupt file, a malformed key, a usage error.

use clap::{Parser, Subcommand};
use crypto::bls::BlsPublicKey;
use cup::{Cup, CupContent};
use std::{path::PathBuf, process::ExitCode};

/// `cup inspect`'s exit codes, for `--help`.
const EXIT_CODES: &str = "Exit codes of `cup inspect`: 0 the CUP is valid (or its signature \
     was not checked: no --subnet-key, or a registry CUP, which carries none); 1 refused: its \
     signature does not verify under --subnet-key; 2 a bad argument: an unreadable or \
     corrupt CUP file, a malformed --subnet-key, or a usage error. It reads a file and asks \
     no server, so it never exits 3 (the other tools' code for an unreachable server).";

#[derive(Parser, Debug)]
#[command(
    name = "cup",
    about = "Catch-up package tools",
    version,
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print a CUP file's fields and check its signature.
    #[command(after_help = EXIT_CODES)]
    Inspect {
        /// The CUP file.
        file: PathBuf,
        /// The subnet's threshold public key (96 hex characters); without it the
        /// signature is not checked.
        #[arg(long, value_name = "HEX")]
        subnet_key: Option<String>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

enum SignatureStatus {
    Valid,
    Invalid(String),
    NotChecked,
    Unsigned(&'static str),
}

fn main() -> ExitCode {
    let Command::Inspect {
        file,
        subnet_key,
        json,
    } = Cli::parse().command;
    let key = match subnet_key
        .as_deref()
        .map(str::parse::<BlsPublicKey>)
        .transpose()
    {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: --subnet-key: {e}");
            return ExitCode::from(2);
        }
    };
    let bytes = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let cup = match Cup::decode(&bytes) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let status = match (&cup, &key) {
        (Cup::Registry(r), _) => SignatureStatus::Unsigned(r.kind.name()),
        (Cup::Signed(_), None) => SignatureStatus::NotChecked,
        (Cup::Signed(s), Some(k)) => match s.verify(k) {
            Ok(()) => SignatureStatus::Valid,
            Err(e) => SignatureStatus::Invalid(e.to_string()),
        },
    };
    if json {
        print_json(&cup, &status);
    } else {
        print_text(&cup, &status);
    }
    match status {
        SignatureStatus::Invalid(_) => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    }
}

fn fields(c: &CupContent) -> Vec<(&'static str, String)> {
    let unknown: Vec<String> = c.extensions.keys().map(u16::to_string).collect();
    vec![
        ("subnet_id", c.subnet_id.to_string()),
        ("height", c.height.to_string()),
        ("registry_version", c.registry_version.to_string()),
        ("replica_version", c.replica_version.to_string()),
        ("block_hash", c.block_hash.to_string()),
        ("block_time_ns", c.block_time_ns.to_string()),
        ("random_beacon", hex::encode(&c.random_beacon.0)),
        ("state_hash", c.state_hash.to_string()),
        (
            "oldest_registry_version_in_use",
            c.oldest_registry_version_in_use.to_string(),
        ),
        (
            "unknown_fields",
            if unknown.is_empty() {
                "none".into()
            } else {
                unknown.join(", ")
            },
        ),
    ]
}

fn print_text(cup: &Cup, status: &SignatureStatus) {
    println!("kind: {}", cup.kind_name());
    for (name, value) in fields(cup.content()) {
        println!("{name}: {value}");
    }
    match status {
        SignatureStatus::Valid => println!("signature: valid"),
        SignatureStatus::Invalid(reason) => println!("signature: INVALID ({reason})"),
        SignatureStatus::NotChecked => {
            println!("signature: not checked (pass --subnet-key HEX to check it)")
        }
        SignatureStatus::Unsigned(kind) => {
            println!("signature: none ({kind} CUP: unsigned, trusted only as registry contents)")
        }
    }
}

fn print_json(cup: &Cup, status: &SignatureStatus) {
    let c = cup.content();
    let (sig, reason) = match status {
        SignatureStatus::Valid => ("valid", None),
        SignatureStatus::Invalid(r) => ("invalid", Some(r.clone())),
        SignatureStatus::NotChecked => ("not_checked", None),
        SignatureStatus::Unsigned(_) => ("unsigned", None),
    };
    let value = serde_json::json!({
        "kind": cup.kind_name(),
        "subnet_id": c.subnet_id.to_string(),
        "height": c.height.get(),
        "registry_version": c.registry_version.get(),
        "replica_version": c.replica_version.to_string(),
        "block_hash": c.block_hash.to_string(),
        "block_time_ns": c.block_time_ns,
        "random_beacon": hex::encode(&c.random_beacon.0),
        "state_hash": c.state_hash.to_string(),
        "oldest_registry_version_in_use": c.oldest_registry_version_in_use.get(),
        "unknown_fields": c.extensions.keys().collect::<Vec<_>>(),
        "signature": sig,
        "signature_error": reason,
    });
    println!("{value}");
}
