//! `nns`: governance from the command line (see INTERFACES.md). Every command has
//! `--help`; every read has `--json`; a failure exits non-zero with a one-line reason on
//! stderr, and a refused proposal or vote changes nothing. The exit code says which
//! failure it was ([`registry::exit`]).

use clap::{Args, Parser, Subcommand};
use crypto::{
    bls::BlsPublicKey,
    ed25519::{Ed25519KeyPair, Ed25519PublicKey},
};
use ingress::Operation;
use registry::{
    api::{ElectedVersionView, GetView, NeuronView, NodeView, ProposalView, SubnetView},
    client::RegistryClient,
    exit::Failure,
    governance::{
        Ballot, GovernanceReply, ProposalKind, SignedBallot, SignedSubmission, Submission, Vote,
    },
    nns_node::{CertifiedRegistry, NnsNode},
};
use serde::Serialize;
use std::{path::PathBuf, process::ExitCode};
use types::{NetworkId, RegistryVersion, ReplicaVersion, SubnetId, codec};

#[derive(Parser, Debug)]
#[command(
    name = "nns",
    about = "Propose, vote and read the registry",
    version,
    after_help = EXIT_CODES
)]
struct Cli {
    /// The registry server, e.g. http://127.0.0.1:8080
    #[arg(long, global = true, env = "NNS_REGISTRY")]
    registry: Option<String>,
    /// The neuron controller's key file (for propose and vote).
    #[arg(long, global = true, env = "NNS_NEURON_KEY")]
    neuron_key: Option<PathBuf>,
    /// The neuron to act as (default: the one neuron the key controls).
    #[arg(long, global = true)]
    neuron: Option<u64>,
    /// The registry's root public key (hex); when given, every response is verified, and
    /// proposals and votes are signed for the network it names.
    #[arg(long, global = true, env = "NNS_REGISTRY_KEY")]
    registry_key: Option<String>,
    /// The network to sign proposals and votes for (64 hex, the registry's
    /// `network_id`). Default: from --registry-key, else from the registry's status
    /// answer (checked against the key it names).
    #[arg(long, global = true, env = "NNS_NETWORK_ID")]
    network_id: Option<NetworkId>,
    /// The NNS subnet's public key (hex of its high-threshold group key; a node's
    /// `node.toml` `nns_public_key`): when --registry names a node of the NNS subnet,
    /// reads come from its certified registry pages, each checked with this key.
    #[arg(long, global = true, env = "NNS_PUBLIC_KEY")]
    nns_key: Option<String>,
    /// Print JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// The exit codes ([`registry::exit`]), for `--help`; README's `nns` section says the same.
const EXIT_CODES: &str = "Exit codes: 0 done; 1 refused (the registry or a check said no: \
     a proposal or vote refused, a proposal that does not exist, an answer whose signature \
     does not verify); 2 a bad argument (a usage error, a malformed --registry URL or key, \
     an unreadable --neuron-key); 3 the registry is unreachable (no connection, or no \
     answer in time).";

#[derive(Subcommand, Debug)]
enum Command {
    /// Submit a proposal (signed with --neuron-key).
    Propose {
        #[command(subcommand)]
        proposal: Proposal,
    },
    /// Vote on a proposal (signed with --neuron-key); prints its status afterwards.
    Vote(VoteArgs),
    /// List proposals.
    Proposals,
    /// Show one proposal.
    Proposal { id: u64 },
    /// List elected versions with their SHA-256 and URLs.
    Versions,
    /// List subnets.
    Subnets,
    /// List node records, each with the subnet it is a member of (or "none").
    Nodes,
    /// List neurons.
    Neurons,
    /// Print the latest registry version.
    RegistryVersion,
    /// Read a registry key, at the latest version or at --at.
    Get {
        key: String,
        #[arg(long)]
        at: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
enum Proposal {
    /// Elect a release so that it may be deployed.
    ElectVersion {
        #[arg(long)]
        version: ReplicaVersion,
        /// SHA-256 of the release package (64 lowercase hex characters).
        #[arg(long)]
        sha256: String,
        /// Download URL (http or https); repeat for mirrors.
        #[arg(long = "url", required = true)]
        urls: Vec<String>,
    },
    /// Retire an elected release that no subnet runs.
    RetireVersion {
        #[arg(long, required = true)]
        version: Vec<ReplicaVersion>,
    },
    /// Deploy an elected release to a subnet.
    DeployVersion {
        #[arg(long)]
        subnet: SubnetId,
        #[arg(long)]
        version: ReplicaVersion,
    },
    /// Change a subnet's halting flags or consensus parameters.
    UpdateSubnetConfig {
        #[arg(long)]
        subnet: SubnetId,
        #[arg(long)]
        halt_at_cup_height: Option<bool>,
        #[arg(long)]
        is_halted: Option<bool>,
        #[arg(long)]
        unit_delay_ms: Option<u64>,
        #[arg(long)]
        initial_notary_delay_ms: Option<u64>,
        #[arg(long)]
        dkg_interval_length: Option<u64>,
    },
    /// Recall an elected release: no node downloads or starts it again.
    RecallVersion {
        #[arg(long)]
        version: ReplicaVersion,
    },
    /// Bring a stuck subnet back on an elected release, from a recovery CUP at a height
    /// whose state hash any of its nodes reports (orchestrator `/status`, `cup`).
    RecoverSubnet {
        #[arg(long)]
        subnet: SubnetId,
        #[arg(long)]
        version: ReplicaVersion,
        #[arg(long)]
        height: u64,
        /// The state hash at that height (64 hex characters).
        #[arg(long)]
        state_hash: types::CryptoHash,
    },
    /// Add registered nodes that are in no subnet to a subnet (`nns nodes` lists them);
    /// the subnet reshares its key to its new membership.
    AddNodes {
        #[arg(long)]
        subnet: SubnetId,
        /// A node id; repeat for more.
        #[arg(long = "node", required = true)]
        nodes: Vec<types::NodeId>,
    },
    /// Remove members from a subnet; they leave at the first CUP without them.
    RemoveNodes {
        #[arg(long)]
        subnet: SubnetId,
        /// A node id; repeat for more.
        #[arg(long = "node", required = true)]
        nodes: Vec<types::NodeId>,
    },
}

#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
struct VoteChoice {
    #[arg(long)]
    yes: bool,
    #[arg(long)]
    no: bool,
}

#[derive(Args, Debug)]
struct VoteArgs {
    #[arg(long)]
    proposal: u64,
    #[command(flatten)]
    choice: VoteChoice,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.report(),
    }
}

fn print<T: Serialize>(
    json: bool,
    value: &T,
    text: impl FnOnce(&T) -> String,
) -> Result<(), Failure> {
    if json {
        println!(
            "{}",
            serde_json::to_string(value).map_err(|e| Failure::Refused(e.to_string()))?
        );
    } else {
        println!("{}", text(value));
    }
    Ok(())
}

fn proposal_line(p: &ProposalView) -> String {
    let mut s = format!(
        "proposal {} {} {} (yes {}, no {}, total {})",
        p.proposal_id,
        p.kind,
        p.status.name(),
        p.yes,
        p.no,
        p.total
    );
    if let Some(r) = &p.failure_reason {
        s.push_str(&format!(": {r}"));
    }
    s
}

fn subnet_line(s: &SubnetView) -> String {
    format!(
        "{} version {} members {}",
        s.subnet_id,
        s.replica_version,
        s.members.len()
    )
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let url = cli.registry.clone().ok_or(Failure::BadArgument(
        "--registry URL is required (or set NNS_REGISTRY)".into(),
    ))?;
    let root_key = cli
        .registry_key
        .as_deref()
        .map(|k| {
            k.parse::<Ed25519PublicKey>()
                .map_err(|e| Failure::BadArgument(format!("--registry-key: {e}")))
        })
        .transpose()?;
    let client = RegistryClient::new(&url, root_key)?;
    let json = cli.json;
    let node = nns_node(&url).await?;
    if matches!(cli.command, Command::Propose { .. } | Command::Vote(_))
        && let Some(node) = node
    {
        return govern_through(&cli, root_key.as_ref(), node).await;
    }
    if let Some((node, _)) = &node
        && matches!(cli.command, Command::Proposals | Command::Proposal { .. })
    {
        let all = node.certified_proposals(&nns_key(&cli)?).await?;
        return match cli.command {
            Command::Proposal { id } => {
                let p = all
                    .iter()
                    .find(|p| p.proposal_id == id)
                    .ok_or_else(|| Failure::Refused(format!("no proposal {id}")))?;
                print(json, p, proposal_line)
            }
            _ => print(json, &all, |ps| {
                ps.iter().map(proposal_line).collect::<Vec<_>>().join("\n")
            }),
        };
    }
    let reads = match node {
        Some((node, _)) => Reads::Nns(Box::new(node.certified_registry(&nns_key(&cli)?).await?)),
        None => Reads::Server(&client),
    };
    match cli.command {
        Command::Propose { ref proposal } => {
            let kind = proposal.kind();
            let (key, neuron_id) = neuron(&cli, &client).await?;
            let network = network(&cli, root_key.as_ref(), &url).await?;
            let submission = Submission {
                network,
                neuron_id,
                nonce: rand::random(),
                kind,
            };
            let id = client
                .submit(&SignedSubmission::sign(submission, &key))
                .await?;
            print(json, &serde_json::json!({ "proposal_id": id }), |_| {
                format!("proposal {id}")
            })
        }
        Command::Vote(ref args) => {
            let (key, neuron_id) = neuron(&cli, &client).await?;
            let network = network(&cli, root_key.as_ref(), &url).await?;
            let vote = if args.choice.yes { Vote::Yes } else { Vote::No };
            let ballot = Ballot {
                network,
                proposal_id: args.proposal,
                neuron_id,
                vote,
            };
            client.vote(&SignedBallot::sign(ballot, &key)).await?;
            let p = client.proposal(args.proposal).await?;
            print(json, &p, proposal_line)
        }
        Command::Proposals => {
            let ps = reads.proposals().await?;
            print(json, &ps, |ps| {
                ps.iter().map(proposal_line).collect::<Vec<_>>().join("\n")
            })
        }
        Command::Proposal { id } => {
            let p = reads.proposal(id).await?;
            print(json, &p, proposal_line)
        }
        Command::Versions => {
            let vs = reads.versions().await?;
            print(json, &vs, |vs| {
                vs.iter()
                    .map(|v| {
                        format!(
                            "{}{} sha256 {} urls {}",
                            v.version,
                            if v.recalled { " (recalled)" } else { "" },
                            v.sha256,
                            v.urls.join(" ")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        Command::Subnets => {
            let ss = reads.subnets().await?;
            print(json, &ss, |ss| {
                ss.iter().map(subnet_line).collect::<Vec<_>>().join("\n")
            })
        }
        Command::Nodes => {
            let ns = reads.nodes().await?;
            print(json, &ns, |ns| {
                ns.iter()
                    .map(|n| {
                        format!(
                            "node {} subnet {} http {} consensus {}",
                            n.node_id,
                            n.subnet_id.map_or("none".to_string(), |s| s.to_string()),
                            n.http_address,
                            n.consensus_address
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        Command::Neurons => {
            let ns = reads.neurons().await?;
            print(json, &ns, |ns| {
                ns.iter()
                    .map(|n| {
                        format!(
                            "neuron {} voting power {} controller {}",
                            n.id, n.voting_power, n.controller
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        Command::RegistryVersion => {
            let v = reads.registry_version().await?;
            print(
                json,
                &serde_json::json!({ "registry_version": v.get() }),
                |_| v.to_string(),
            )
        }
        Command::Get { ref key, at } => {
            let g = reads.get(key, at.map(RegistryVersion::new)).await?;
            if g.value_hex.is_none() && !json {
                return Err(Failure::Refused(format!(
                    "{key} is not present at registry version {}",
                    g.at
                )));
            }
            print(json, &g, |g| {
                let value = g
                    .value
                    .as_ref()
                    .map(|v| serde_json::to_string_pretty(v).unwrap_or_default())
                    .or_else(|| g.value_hex.clone())
                    .unwrap_or_default();
                format!(
                    "{} at version {} (written at {}):\n{value}",
                    g.key,
                    g.at,
                    g.written_at.unwrap_or(0)
                )
            })
        }
    }
}

impl Proposal {
    fn kind(&self) -> ProposalKind {
        match self {
            Self::ElectVersion {
                version,
                sha256,
                urls,
            } => ProposalKind::ElectVersion {
                version: version.clone(),
                sha256_hex: sha256.clone(),
                urls: urls.clone(),
            },
            Self::RetireVersion { version } => ProposalKind::RetireVersion {
                versions: version.clone(),
            },
            Self::DeployVersion { subnet, version } => ProposalKind::DeployVersion {
                subnet: *subnet,
                version: version.clone(),
            },
            Self::UpdateSubnetConfig {
                subnet,
                halt_at_cup_height,
                is_halted,
                unit_delay_ms,
                initial_notary_delay_ms,
                dkg_interval_length,
            } => ProposalKind::UpdateSubnetConfig {
                subnet: *subnet,
                halt_at_cup_height: *halt_at_cup_height,
                is_halted: *is_halted,
                unit_delay_ms: *unit_delay_ms,
                initial_notary_delay_ms: *initial_notary_delay_ms,
                dkg_interval_length: *dkg_interval_length,
            },
            Self::RecallVersion { version } => ProposalKind::RecallVersion {
                version: version.clone(),
            },
            Self::RecoverSubnet {
                subnet,
                version,
                height,
                state_hash,
            } => ProposalKind::RecoverSubnet {
                subnet: *subnet,
                version: version.clone(),
                height: types::Height::new(*height),
                state_hash: *state_hash,
            },
            Self::AddNodes { subnet, nodes } => ProposalKind::AddNodes {
                subnet: *subnet,
                nodes: nodes.clone(),
            },
            Self::RemoveNodes { subnet, nodes } => ProposalKind::RemoveNodes {
                subnet: *subnet,
                nodes: nodes.clone(),
            },
        }
    }
}

/// The network to sign for: --network-id, else the one --registry-key names, else the
/// one the registry's status answer names (its signature checked with the key it gives,
/// so the answer is at least self-consistent; pass --registry-key to pin it).
async fn network(
    cli: &Cli,
    root_key: Option<&Ed25519PublicKey>,
    url: &str,
) -> Result<NetworkId, Failure> {
    let from_key = root_key.map(|k| NetworkId::from_registry_root_key(k.as_bytes()));
    match (cli.network_id, from_key) {
        (Some(given), Some(derived)) if given != derived => Err(Failure::BadArgument(format!(
            "--network-id {given} is not the network of --registry-key (that is {derived})"
        ))),
        (Some(given), _) => Ok(given),
        (None, Some(derived)) => Ok(derived),
        (None, None) => {
            let status = RegistryClient::new(url, None)?.status().await?;
            let key: Ed25519PublicKey = status
                .public_key
                .parse()
                .map_err(|e| Failure::Refused(format!("the registry's public key: {e}")))?;
            // Ask again, verifying the answer with the key it named.
            let checked = RegistryClient::new(url, Some(key))?.status().await?;
            let network = NetworkId::from_registry_root_key(key.as_bytes());
            if checked.public_key != status.public_key || checked.network_id != network {
                return Err(Failure::Refused(format!(
                    "the registry's status names network {} but key {}: pass --registry-key",
                    checked.network_id, checked.public_key
                )));
            }
            Ok(network)
        }
    }
}

/// Where reads come from: a registry server (answers signed with the registry key when
/// --registry-key is given), or a node of the NNS subnet (its certified pages, checked
/// with --nns-key).
enum Reads<'a> {
    Server(&'a RegistryClient),
    Nns(Box<CertifiedRegistry>),
}

impl Reads<'_> {
    async fn versions(&self) -> Result<Vec<ElectedVersionView>, Failure> {
        match self {
            Self::Server(c) => Ok(c.versions().await?),
            Self::Nns(r) => Ok(r.versions()),
        }
    }

    async fn subnets(&self) -> Result<Vec<SubnetView>, Failure> {
        match self {
            Self::Server(c) => Ok(c.subnets().await?),
            Self::Nns(r) => Ok(r.subnets()),
        }
    }

    async fn nodes(&self) -> Result<Vec<NodeView>, Failure> {
        match self {
            Self::Server(c) => Ok(c.nodes().await?),
            Self::Nns(r) => Ok(r.nodes()),
        }
    }

    async fn neurons(&self) -> Result<Vec<NeuronView>, Failure> {
        match self {
            Self::Server(c) => Ok(c.neurons().await?),
            Self::Nns(r) => Ok(r.neurons()),
        }
    }

    async fn registry_version(&self) -> Result<RegistryVersion, Failure> {
        match self {
            Self::Server(c) => Ok(c.registry_version().await?),
            Self::Nns(r) => Ok(r.registry_version()),
        }
    }

    async fn get(&self, key: &str, at: Option<RegistryVersion>) -> Result<GetView, Failure> {
        match self {
            Self::Server(c) => Ok(c.get(key, at).await?),
            Self::Nns(r) => r.get(key, at),
        }
    }

    /// Proposals through a node of the NNS subnet are read before (`run`).
    async fn proposals(&self) -> Result<Vec<ProposalView>, Failure> {
        match self {
            Self::Server(c) => Ok(c.proposals().await?),
            Self::Nns(_) => Err(Failure::Refused("proposals are read from the node".into())),
        }
    }

    async fn proposal(&self, id: u64) -> Result<ProposalView, Failure> {
        match self {
            Self::Server(c) => Ok(c.proposal(id).await?),
            Self::Nns(_) => Err(Failure::Refused("proposals are read from the node".into())),
        }
    }
}

/// --nns-key, which reads from a node of the NNS subnet need.
fn nns_key(cli: &Cli) -> Result<BlsPublicKey, Failure> {
    let hex_key = cli.nns_key.as_deref().ok_or(Failure::BadArgument(
        "--nns-key HEX is required to read the registry from a node of the NNS subnet (the NNS subnet's public key: node.toml's nns_public_key)".into(),
    ))?;
    hex::decode(hex_key)
        .ok()
        .and_then(|b| BlsPublicKey::from_bytes(&b).ok())
        .ok_or_else(|| Failure::BadArgument("--nns-key is not the hex of a BLS public key".into()))
}

/// `propose` and `vote` through a node of the NNS subnet: the call goes as an update, and
/// its certified outcome is printed (`vote` prints the proposal's id and status).
async fn govern_through(
    cli: &Cli,
    root_key: Option<&Ed25519PublicKey>,
    node: (NnsNode, NetworkId),
) -> Result<(), Failure> {
    let (key, neuron_id, network) = nns_caller(cli, root_key, &node).await?;
    let json = cli.json;
    match &cli.command {
        Command::Propose { proposal } => {
            let submission = Submission {
                network,
                neuron_id,
                nonce: rand::random(),
                kind: proposal.kind(),
            };
            let submission = codec::encode(&SignedSubmission::sign(submission, &key));
            let op = Operation::Propose { submission };
            match node
                .0
                .call(&key, network, op, registry::server::now_ns())
                .await?
            {
                GovernanceReply::Proposed { proposal_id: id } => {
                    print(json, &serde_json::json!({ "proposal_id": id }), |_| {
                        format!("proposal {id}")
                    })
                }
                other => Err(refusal(other)),
            }
        }
        Command::Vote(args) => {
            let ballot = Ballot {
                network,
                proposal_id: args.proposal,
                neuron_id,
                vote: if args.choice.yes { Vote::Yes } else { Vote::No },
            };
            let ballot = codec::encode(&SignedBallot::sign(ballot, &key));
            match node
                .0
                .call(
                    &key,
                    network,
                    Operation::Vote { ballot },
                    registry::server::now_ns(),
                )
                .await?
            {
                GovernanceReply::Voted {
                    proposal_id,
                    status,
                } => print(
                    json,
                    &serde_json::json!({ "proposal_id": proposal_id, "status": status }),
                    |_| format!("proposal {proposal_id} {}", status.name()),
                ),
                other => Err(refusal(other)),
            }
        }
        _ => Err(Failure::BadArgument(
            "only propose and vote go to a node of the NNS subnet".into(),
        )),
    }
}

/// A node of an NNS subnet at `url`, with the network it serves; `None` when `url`
/// answers as something else (a registry server).
async fn nns_node(url: &str) -> Result<Option<(NnsNode, NetworkId)>, Failure> {
    let node = NnsNode::new(url)?;
    Ok(node.probe().await?.map(|network| (node, network)))
}

/// The neuron key, the neuron's id and the network to sign for, for a call to an NNS
/// node. The node serves no registry reads yet (they come with certified reads), so the
/// neuron is --neuron, and the network --network-id, --registry-key's, or the node's.
async fn nns_caller(
    cli: &Cli,
    root_key: Option<&Ed25519PublicKey>,
    node: &(NnsNode, NetworkId),
) -> Result<(Ed25519KeyPair, u64, NetworkId), Failure> {
    let path = cli.neuron_key.as_ref().ok_or(Failure::BadArgument(
        "--neuron-key FILE is required to propose or vote".into(),
    ))?;
    let key = Ed25519KeyPair::read_from_file(path)
        .map_err(|e| Failure::BadArgument(format!("--neuron-key: {e}")))?;
    let neuron_id = match cli.neuron {
        Some(id) => id,
        None => {
            let key_of = |e: Failure| {
                match e {
                Failure::BadArgument(_) => Failure::BadArgument(
                    "give --neuron ID, or --nns-key HEX to look the neuron up in the certified registry".into(),
                ),
                other => other,
            }
            };
            let registry = node
                .0
                .certified_registry(&nns_key(cli).map_err(key_of)?)
                .await?;
            controlled_neuron(&registry.neurons(), &key, path)?
        }
    };
    let network = match (cli.network_id, root_key) {
        (Some(n), _) => n,
        (None, Some(k)) => NetworkId::from_registry_root_key(k.as_bytes()),
        (None, None) => node.1,
    };
    if network != node.1 {
        return Err(Failure::BadArgument(format!(
            "the node at --registry serves network {}, not {network}",
            node.1
        )));
    }
    Ok((key, neuron_id, network))
}

/// A governance reply that is not the one the call expects: a refusal, with its reason.
fn refusal(reply: GovernanceReply) -> Failure {
    match reply {
        GovernanceReply::Refused { reason } => Failure::Refused(reason),
        other => Failure::Refused(format!("unexpected reply: {other:?}")),
    }
}

/// The neuron key and the id of the neuron it controls.
async fn neuron(cli: &Cli, client: &RegistryClient) -> Result<(Ed25519KeyPair, u64), Failure> {
    let path = cli.neuron_key.as_ref().ok_or(Failure::BadArgument(
        "--neuron-key FILE is required to propose or vote".into(),
    ))?;
    let key = Ed25519KeyPair::read_from_file(path)
        .map_err(|e| Failure::BadArgument(format!("--neuron-key: {e}")))?;
    if let Some(id) = cli.neuron {
        return Ok((key, id));
    }
    let id = controlled_neuron(&client.neurons().await?, &key, path)?;
    Ok((key, id))
}

/// The one neuron among `neurons` that `key` (read from `path`) controls.
fn controlled_neuron(
    neurons: &[NeuronView],
    key: &Ed25519KeyPair,
    path: &std::path::Path,
) -> Result<u64, Failure> {
    let controller = key.public_key().to_string();
    let mine: Vec<u64> = neurons
        .iter()
        .filter(|n| n.controller == controller)
        .map(|n| n.id)
        .collect();
    match mine.as_slice() {
        [id] => Ok(*id),
        [] => Err(Failure::Refused(format!(
            "no neuron is controlled by the key in {}",
            path.display()
        ))),
        ids => Err(Failure::BadArgument(format!(
            "the key in {} controls neurons {ids:?}: choose one with --neuron",
            path.display()
        ))),
    }
}
