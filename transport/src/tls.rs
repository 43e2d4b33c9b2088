//! Certificates bound to registry keys, the pinned verifier, and the rustls and quinn
//! configurations built from them (ring provider, TLS 1.3 only).

use crate::{
    IDLE_TIMEOUT_MS, KEEP_ALIVE_INTERVAL_MS, TransportError, membership::Membership,
    stats::Counters,
};
use crypto::ed25519::{Ed25519KeyPair, Ed25519PublicKey};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error as TlsError, PeerMisbehaved,
    SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime},
    server::{
        ParsedCertificate,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};
use std::{sync::Arc, time::Duration};
use types::NodeId;

/// The DER encoding of an ed25519 SubjectPublicKeyInfo (RFC 8410) up to the key:
/// `SEQUENCE(42) { SEQUENCE(5) { OID 1.3.101.112 }, BIT STRING(33) 0 unused bits, ... }`,
/// followed by the 32 key bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// QUIC streams a client may open on a connection it dialed: one unidirectional stream,
/// which carries all of the dialer's messages.
const CLIENT_UNI_STREAMS: u32 = 1;
/// Streams the dialed side may open: one unidirectional stream, for the admission byte.
const SERVER_UNI_STREAMS: u32 = 1;

fn tls_error(e: impl std::fmt::Display) -> TransportError {
    TransportError::Tls(e.to_string())
}

/// The TLS name of a node: its id in two 32-hex-digit labels (a DNS label is at most 63
/// characters). Informational only: the certificate's key is what is checked.
pub(crate) fn tls_name(node: &NodeId) -> String {
    let hex = node.to_string();
    let (a, b) = hex.split_at(hex.len() / 2);
    format!("{a}.{b}")
}

/// The ed25519 key in a certificate's SubjectPublicKeyInfo; anything else is refused.
pub(crate) fn ed25519_key_of(cert: &CertificateDer<'_>) -> Result<Ed25519PublicKey, TlsError> {
    let not_ed25519 =
        || TlsError::InvalidCertificate(CertificateError::ApplicationVerificationFailure);
    let spki = ParsedCertificate::try_from(cert)?.subject_public_key_info();
    let key = spki
        .as_ref()
        .strip_prefix(&ED25519_SPKI_PREFIX[..])
        .filter(|k| k.len() == 32)
        .ok_or_else(not_ed25519)?;
    Ed25519PublicKey::from_bytes(key).map_err(|_| not_ed25519())
}

/// The key a connection's peer authenticated with (its certificate's), if any.
pub(crate) fn peer_key(conn: &quinn::Connection) -> Option<Ed25519PublicKey> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    ed25519_key_of(certs.first()?).ok()
}

/// The ALPN protocol a connection negotiated.
pub(crate) fn negotiated_protocol(conn: &quinn::Connection) -> Option<Vec<u8>> {
    conn.handshake_data()?
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?
        .protocol
}

/// Whom a [`PinnedVerifier`] accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Accept {
    /// Server side: a client holding the key of any current member.
    AnyMember,
    /// Client side: exactly the member being dialed, with its current registry key.
    Exactly(NodeId),
}

/// Accepts a peer's certificate iff it is one self-signed certificate whose ed25519 key is
/// pinned by the current member set (see [`Accept`]); handshake signatures are verified
/// with the provider's algorithms, so the peer proves it holds that key.
#[derive(Debug)]
pub(crate) struct PinnedVerifier {
    accept: Accept,
    membership: Arc<Membership>,
    algorithms: WebPkiSupportedAlgorithms,
    counters: Arc<Counters>,
}

impl PinnedVerifier {
    pub(crate) fn new(
        accept: Accept,
        membership: Arc<Membership>,
        provider: &CryptoProvider,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            accept,
            membership,
            algorithms: provider.signature_verification_algorithms,
            counters,
        }
    }

    /// The member the certificate authenticates, or why it is refused.
    pub(crate) fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<NodeId, TlsError> {
        if !intermediates.is_empty() {
            return Err(TlsError::General(
                "certificate chains are refused: present one self-signed certificate".into(),
            ));
        }
        let key = ed25519_key_of(end_entity)?;
        self.membership
            .read(|table| match self.accept {
                Accept::AnyMember => table.node_of_key(&key),
                Accept::Exactly(node) => table
                    .get(&node)
                    .filter(|m| m.public_key == key)
                    .map(|m| m.node_id),
            })
            .ok_or(TlsError::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
    }

    fn verify_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        if dss.scheme != SignatureScheme::ED25519 {
            return Err(PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme.into());
        }
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn tls12_refused() -> TlsError {
        TlsError::General("TLS 1.2 is not offered".into())
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        match self.check(end_entity, intermediates) {
            Ok(_) => Ok(ServerCertVerified::assertion()),
            Err(e) => {
                self.counters.rejected_servers.inc();
                tracing::warn!(accept = ?self.accept, error = %e, "refused the dialed node's certificate");
                Err(e)
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        Err(Self::tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

impl ClientCertVerifier for PinnedVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, TlsError> {
        match self.check(end_entity, intermediates) {
            Ok(_) => Ok(ClientCertVerified::assertion()),
            Err(e) => {
                self.counters.rejected_connections.inc();
                // Debug, not warn: anyone who can reach the port can cause this; the
                // counter is what to watch.
                tracing::debug!(error = %e, "refused a connecting node's certificate");
                Err(e)
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        Err(Self::tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// This node's TLS identity and the configurations made from it.
#[derive(Debug)]
pub(crate) struct NodeTls {
    provider: Arc<CryptoProvider>,
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    alpn: Vec<u8>,
    membership: Arc<Membership>,
    counters: Arc<Counters>,
}

impl NodeTls {
    /// Makes the self-signed certificate of `key` (the node's registry key).
    pub(crate) fn new(
        key: &Ed25519KeyPair,
        alpn: &[u8],
        membership: Arc<Membership>,
        counters: Arc<Counters>,
    ) -> Result<Self, TransportError> {
        let pkcs8 = PrivatePkcs8KeyDer::from(key.to_pkcs8_der().map_err(tls_error)?);
        let signer = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519)
            .map_err(tls_error)?;
        let cert = rcgen::CertificateParams::new(vec![tls_name(&key.node_id())])
            .and_then(|params| params.self_signed(&signer))
            .map_err(tls_error)?
            .der()
            .clone();
        // What peers will pin: the certificate must carry exactly the registry key.
        match ed25519_key_of(&cert) {
            Ok(k) if k == key.public_key() => {}
            other => {
                return Err(TransportError::Tls(format!(
                    "the certificate does not carry the node key: {other:?}"
                )));
            }
        }
        Ok(Self {
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            cert,
            key: pkcs8,
            alpn: alpn.to_vec(),
            membership,
            counters,
        })
    }

    #[cfg(test)]
    pub(crate) fn certificate(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    fn verifier(&self, accept: Accept) -> Arc<PinnedVerifier> {
        Arc::new(PinnedVerifier::new(
            accept,
            self.membership.clone(),
            &self.provider,
            self.counters.clone(),
        ))
    }

    /// The endpoint's server side: any current member may connect (client auth mandatory).
    pub(crate) fn server_config(&self) -> Result<quinn::ServerConfig, TransportError> {
        let tls = self.rustls_server_config()?;
        let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(tls_error)?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
        config.transport_config(Arc::new(transport_params(CLIENT_UNI_STREAMS)?));
        Ok(config)
    }

    fn rustls_server_config(&self) -> Result<rustls::ServerConfig, TransportError> {
        let mut tls = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error)?
            .with_client_cert_verifier(self.verifier(Accept::AnyMember))
            .with_single_cert(
                vec![self.cert.clone()],
                PrivateKeyDer::Pkcs8(self.key.clone_key()),
            )
            .map_err(tls_error)?;
        tls.alpn_protocols = vec![self.alpn.clone()];
        // No session resumption: a resumed TLS 1.3 session skips certificate verification,
        // and every connection must be checked against the member set of its own time.
        tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        tls.send_tls13_tickets = 0;
        Ok(tls)
    }

    /// For dialing `node`: only its current registry key is accepted.
    pub(crate) fn client_config(
        &self,
        node: NodeId,
    ) -> Result<quinn::ClientConfig, TransportError> {
        let mut tls = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error)?
            .dangerous()
            .with_custom_certificate_verifier(self.verifier(Accept::Exactly(node)))
            .with_client_auth_cert(
                vec![self.cert.clone()],
                PrivateKeyDer::Pkcs8(self.key.clone_key()),
            )
            .map_err(tls_error)?;
        tls.alpn_protocols = vec![self.alpn.clone()];
        // No resumption (see `server_config`), hence no early data either.
        tls.resumption = rustls::client::Resumption::disabled();
        tls.enable_early_data = false;
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(tls_error)?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        config.transport_config(Arc::new(transport_params(SERVER_UNI_STREAMS)?));
        Ok(config)
    }
}

/// The endpoint's configuration: quinn's defaults but for two keys that come from the
/// node key instead of being random per endpoint: the stateless-reset key, and the key
/// connection ids are made and recognized with. A node that restarts on its address (a
/// crash, an upgrade's new replica) then recognizes the connection ids its previous
/// endpoint gave out and answers their packets with a reset whose token that endpoint
/// announced. A peer whose connection the old process never closed (its close frames
/// lost, or none sent) drops it at its next packet and redials, instead of sending into
/// it until the idle timeout. Both keys are hashes of the secret seed: only this node can
/// make the tokens.
pub(crate) fn endpoint_config(key: &Ed25519KeyPair) -> quinn::EndpointConfig {
    let secret = types::CryptoHash::of(types::domain::TRANSPORT_RESET_KEY, &key.seed());
    let mut config = quinn::EndpointConfig::new(Arc::new(ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        &secret.0,
    )));
    // quinn's id generator checks ids with a fast non-cryptographic hash: its key only
    // has to be the same across restarts, and is one-way from the reset key.
    let ids = types::CryptoHash::of(types::domain::TRANSPORT_RESET_KEY, &secret.0);
    let mut ids_key = [0u8; 8];
    ids_key.copy_from_slice(&ids.0[..8]);
    let ids_key = u64::from_le_bytes(ids_key);
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(ids_key))
    });
    config
}

/// QUIC limits for one side: how many unidirectional streams the other side may open (no
/// bidirectional ones), idle timeout and keep-alive.
fn transport_params(peer_uni_streams: u32) -> Result<quinn::TransportConfig, TransportError> {
    let mut params = quinn::TransportConfig::default();
    params
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(peer_uni_streams))
        .max_concurrent_bidi_streams(quinn::VarInt::from_u32(0))
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(Duration::from_millis(IDLE_TIMEOUT_MS))
                .map_err(tls_error)?,
        ))
        .keep_alive_interval(Some(Duration::from_millis(KEEP_ALIVE_INTERVAL_MS)));
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::{Member, MemberTable};
    use std::net::SocketAddr;

    fn key(seed: u8) -> Ed25519KeyPair {
        Ed25519KeyPair::from_seed(&[seed; 32])
    }

    fn member(seed: u8) -> Member {
        let public_key = key(seed).public_key();
        Member {
            node_id: public_key.node_id(),
            public_key,
            address: SocketAddr::from(([127, 0, 0, 1], 1)),
        }
    }

    fn membership(seeds: &[u8]) -> Arc<Membership> {
        let table = MemberTable::new(seeds.iter().map(|&s| member(s)).collect()).expect("valid");
        Arc::new(Membership::new(table))
    }

    fn cert(seed: u8) -> CertificateDer<'static> {
        NodeTls::new(&key(seed), b"p", membership(&[]), Arc::default())
            .expect("tls")
            .certificate()
            .clone()
    }

    #[test]
    fn the_certificate_carries_the_registry_key_and_the_node_id_name() {
        let c = cert(1);
        assert_eq!(ed25519_key_of(&c).expect("ed25519"), key(1).public_key());
        // The name is valid for rustls (two labels under 64 characters each).
        let name = tls_name(&key(1).node_id());
        assert!(ServerName::try_from(name.as_str()).is_ok(), "{name}");
        assert_eq!(name.replace('.', ""), key(1).node_id().to_string());
    }

    #[test]
    fn a_certificate_with_another_key_type_is_refused() {
        let p256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("p256");
        let c = rcgen::CertificateParams::new(vec!["x.example".to_string()])
            .and_then(|p| p.self_signed(&p256))
            .expect("cert");
        assert!(ed25519_key_of(c.der()).is_err());
        assert!(ed25519_key_of(&CertificateDer::from(vec![0x30, 0x00])).is_err());
    }

    #[test]
    fn the_server_never_resumes_a_session() {
        // A resumed session would skip the verifier: every handshake must be a full one.
        let tls = NodeTls::new(&key(1), b"p", membership(&[1]), Arc::default()).expect("tls");
        let server = tls.rustls_server_config().expect("server config");
        assert!(!server.session_storage.can_cache());
        assert_eq!(server.send_tls13_tickets, 0);
        assert_eq!(server.max_early_data_size, 0);
    }

    #[test]
    fn the_server_side_accepts_any_member_and_counts_refusals() {
        let counters = Arc::new(Counters::default());
        let provider = rustls::crypto::ring::default_provider();
        let v = PinnedVerifier::new(
            Accept::AnyMember,
            membership(&[1, 2]),
            &provider,
            counters.clone(),
        );
        let now = UnixTime::now();
        assert!(v.verify_client_cert(&cert(1), &[], now).is_ok());
        assert!(v.verify_client_cert(&cert(2), &[], now).is_ok());
        assert!(v.verify_client_cert(&cert(3), &[], now).is_err());
        // A member's certificate with anything chained to it is refused too.
        assert!(v.verify_client_cert(&cert(1), &[cert(2)], now).is_err());
        assert_eq!(counters.snapshot().rejected_connections, 2);
        assert!(v.client_auth_mandatory());
    }

    #[test]
    fn the_client_side_accepts_exactly_the_dialed_member() {
        let counters = Arc::new(Counters::default());
        let provider = rustls::crypto::ring::default_provider();
        let dialed = key(1).node_id();
        let v = PinnedVerifier::new(
            Accept::Exactly(dialed),
            membership(&[1, 2]),
            &provider,
            counters.clone(),
        );
        let name = ServerName::try_from(tls_name(&dialed)).expect("name");
        let now = UnixTime::now();
        assert!(v.verify_server_cert(&cert(1), &[], &name, &[], now).is_ok());
        // Another member answering at the dialed address is refused, as is a stranger.
        assert!(
            v.verify_server_cert(&cert(2), &[], &name, &[], now)
                .is_err()
        );
        assert!(
            v.verify_server_cert(&cert(3), &[], &name, &[], now)
                .is_err()
        );
        assert_eq!(counters.snapshot().rejected_servers, 2);

        // Once the dialed node leaves the member set, even its own key is refused.
        v.membership
            .replace(MemberTable::new(vec![member(2)]).expect("valid"));
        assert!(
            v.verify_server_cert(&cert(1), &[], &name, &[], now)
                .is_err()
        );
    }
}
