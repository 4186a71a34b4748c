//! The server side of WhatsApp's Noise XX handshake and of the framed,
//! encrypted stream after it, built from wacore's own primitives.
//!
//! The client (whatsapp-rust's `XxHandshakeState`) runs, over one
//! `NoiseHandshake` keyed by `NOISE_PATTERN_XX` with the `WA` header as
//! prologue:
//!
//! ```text
//!   -> e                   ClientHello{ephemeral}
//!   <- e, ee, s, es        ServerHello{ephemeral, static (enc), payload = CertChain (enc)}
//!   -> s, se               ClientFinish{static (enc), payload = ClientPayload (enc)}
//! ```
//!
//! A paired client that cached the server's static from an earlier XX runs
//! IK instead, one round trip: `-> e, es, s, ss, payload` then
//! `<- e, ee, se, payload` (the cert chain), no finish.
//!
//! The responder below mirrors it step for step so both transcripts agree.
//! `finish()` splits into (first, second) keys: the client writes with the
//! first, so the server reads with the first and writes with the second.
//! After the handshake each frame is AES-GCM under a per-direction counter
//! starting at 0, with no associated data.

use anyhow::{Context, anyhow, bail};
use bytes::BytesMut;
use rand::RngCore;
use whatsapp_rust::buffa::{self, Message as _};
use whatsapp_rust::wacore::libsignal::protocol::PrivateKey;
use whatsapp_rust::wacore::noise::{NoiseCipher, NoiseHandshake};
use whatsapp_rust::wacore_binary::Node;
use whatsapp_rust::wacore_binary::consts::{NOISE_PATTERN_IK, NOISE_PATTERN_XX, WA_CONN_HEADER};
use whatsapp_rust::waproto::whatsapp as wa;

/// A Curve25519 key pair as raw 32-byte halves.
#[derive(Clone)]
pub struct Keys {
    pub private: [u8; 32],
    pub public: [u8; 32],
}

impl Keys {
    pub fn generate() -> Keys {
        let mut seed = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut seed);
        let private = PrivateKey::deserialize(&seed).expect("32-byte private key");
        let public = private.public_key().expect("public key");
        Keys {
            private: *private.serialize(),
            public: public
                .public_key_bytes()
                .try_into()
                .expect("a 32-byte Djb public key"),
        }
    }
}

/// Signs `message` with an XEdDSA signature (what WhatsApp's certs carry).
fn sign(private: &[u8; 32], message: &[u8]) -> Vec<u8> {
    PrivateKey::deserialize(private)
        .and_then(|k| {
            k.calculate_signature(message, &mut rand_010::make_rng::<rand_010::rngs::StdRng>())
        })
        .expect("a 32-byte private key signs")
        .to_vec()
}

/// A `CertChain` whose leaf key is the server's static key, signed the way
/// the real server's is: the intermediate (issuer serial 0) by `root`, the
/// leaf (issuer serial = the intermediate's serial) by the intermediate.
/// A client that checks the chain against its hard-coded root (Baileys 7
/// reads `WA_CERT_DETAILS.PUBLIC_KEY`) accepts it once that root is this
/// server's; whatsapp-rust's test build (`danger-skip-cert-chain-verify`)
/// checks only the structure.
pub fn cert_chain(root: &Keys, leaf_key: &[u8; 32]) -> Vec<u8> {
    use wa::cert_chain::{NoiseCertificate, noise_certificate::Details};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let intermediate_keys = Keys::generate();
    let intermediate = Details {
        serial: Some(7),
        issuer_serial: Some(0),
        key: Some(intermediate_keys.public.to_vec()),
        not_before: Some(now - 3600),
        not_after: Some(now + 30 * 86_400),
    }
    .encode_to_vec();
    let leaf = Details {
        serial: Some(8),
        issuer_serial: Some(7),
        key: Some(leaf_key.to_vec()),
        not_before: Some(now - 3600),
        not_after: Some(now + 7 * 86_400),
    }
    .encode_to_vec();
    wa::CertChain {
        intermediate: buffa::MessageField::some(NoiseCertificate {
            signature: Some(sign(&root.private, &intermediate)),
            details: Some(intermediate),
        }),
        leaf: buffa::MessageField::some(NoiseCertificate {
            signature: Some(sign(&intermediate_keys.private, &leaf)),
            details: Some(leaf),
        }),
    }
    .encode_to_vec()
}

/// Strips the connection header from the client's first WebSocket message.
/// A fresh client sends `WA\x06<dict version>`; a client with stored edge
/// routing info would send an `ED` pre-intro first (not supported here).
pub fn strip_conn_header(first: &[u8]) -> anyhow::Result<&[u8]> {
    if let Some(rest) = first.strip_prefix(&WA_CONN_HEADER[..]) {
        return Ok(rest);
    }
    if first.starts_with(b"ED") {
        bail!("edge-routing pre-intro is not supported by the mock server");
    }
    bail!(
        "no WA connection header: {:02x?}",
        &first[..first.len().min(8)]
    )
}

/// After the server's hello, waiting for the client's finish.
pub struct Responder {
    noise: NoiseHandshake,
    ephemeral: Keys,
}

/// What a finished handshake gives the server.
pub struct Session {
    /// The client's Noise static key (its QR code carries it too).
    pub client_static: [u8; 32],
    pub payload: wa::ClientPayload,
    pub read: FrameCipher,
    pub write: FrameCipher,
    /// The handshake was IK (the client had the server's static cached).
    pub ik: bool,
}

/// What the server answers a `ClientHello` with.
pub enum Hello {
    /// A fresh client (XX): send the `ServerHello`, then wait for the
    /// client's finish.
    Xx(Responder, Vec<u8>),
    /// A client with the server's static cached (IK): the hello already
    /// carried its static and payload, so the `ServerHello` ends it.
    Ik(Box<Session>, Vec<u8>),
}

/// Reads a `ClientHello` and answers with the `ServerHello` bytes (not yet
/// framed). IK (a hello carrying the client's static) is answered with
/// `<- e, ee, se` and the cert chain, as WA Web's accept path does; a
/// hello encrypted to another server key fails here, and the client falls
/// back to XX on its next attempt.
pub fn respond(client_hello: &[u8], server_static: &Keys, cert: &[u8]) -> anyhow::Result<Hello> {
    let msg = wa::HandshakeMessage::decode_from_slice(client_hello)
        .context("decoding the ClientHello")?;
    let hello = msg
        .client_hello
        .into_option()
        .ok_or_else(|| anyhow!("no client_hello"))?;
    let client_eph: [u8; 32] = hello
        .ephemeral
        .ok_or_else(|| anyhow!("ClientHello without ephemeral"))?
        .try_into()
        .map_err(|_| anyhow!("client ephemeral is not 32 bytes"))?;
    match (hello.r#static, hello.payload) {
        (Some(static_ct), Some(payload_ct)) => {
            let (session, reply) =
                respond_ik(client_eph, &static_ct, &payload_ct, server_static, cert)?;
            Ok(Hello::Ik(Box::new(session), reply))
        }
        (None, _) => {
            let (responder, reply) = Responder::respond(client_eph, server_static, cert)?;
            Ok(Hello::Xx(responder, reply))
        }
        (Some(_), None) => bail!("IK ClientHello without a payload"),
    }
}

/// The responder side of `-> e, es, s, ss, payload` / `<- e, ee, se, payload`.
fn respond_ik(
    client_eph: [u8; 32],
    static_ct: &[u8],
    payload_ct: &[u8],
    server_static: &Keys,
    cert: &[u8],
) -> anyhow::Result<(Session, Vec<u8>)> {
    let mut noise = NoiseHandshake::new(NOISE_PATTERN_IK, &WA_CONN_HEADER)?;
    noise.authenticate(&server_static.public); // pre-message <- s
    noise.authenticate(&client_eph);
    noise.mix_shared_secret(&server_static.private, &client_eph)?; // es
    let client_static: [u8; 32] = noise
        .decrypt(static_ct)
        .context("decrypting the IK client static (cached for another server key?)")?
        .try_into()
        .map_err(|_| anyhow!("client static is not 32 bytes"))?;
    noise.mix_shared_secret(&server_static.private, &client_static)?; // ss
    let payload = noise
        .decrypt(payload_ct)
        .context("decrypting the IK client payload")?;
    let payload =
        wa::ClientPayload::decode_from_slice(&payload).context("decoding the ClientPayload")?;
    let ephemeral = Keys::generate();
    noise.authenticate(&ephemeral.public);
    noise.mix_shared_secret(&ephemeral.private, &client_eph)?; // ee
    noise.mix_shared_secret(&ephemeral.private, &client_static)?; // se
    let cert_ct = noise.encrypt(cert)?;
    let reply = wa::HandshakeMessage {
        server_hello: buffa::MessageField::some(wa::handshake_message::ServerHello {
            ephemeral: Some(ephemeral.public.to_vec()),
            payload: Some(cert_ct),
            ..Default::default()
        }),
        ..Default::default()
    };
    let (first, second) = noise.finish()?;
    Ok((
        Session {
            client_static,
            payload,
            read: FrameCipher::new(first),
            write: FrameCipher::new(second),
            ik: true,
        },
        reply.encode_to_vec(),
    ))
}

impl Responder {
    /// Answers an XX `ClientHello` (`<- e, ee, s, es, payload`).
    fn respond(
        client_eph: [u8; 32],
        server_static: &Keys,
        cert: &[u8],
    ) -> anyhow::Result<(Responder, Vec<u8>)> {
        let mut noise = NoiseHandshake::new(NOISE_PATTERN_XX, &WA_CONN_HEADER)?;
        noise.authenticate(&client_eph);
        let ephemeral = Keys::generate();
        noise.authenticate(&ephemeral.public);
        noise.mix_shared_secret(&ephemeral.private, &client_eph)?; // ee
        let static_ct = noise.encrypt(&server_static.public)?;
        noise.mix_shared_secret(&server_static.private, &client_eph)?; // es
        let cert_ct = noise.encrypt(cert)?;

        let reply = wa::HandshakeMessage {
            server_hello: buffa::MessageField::some(wa::handshake_message::ServerHello {
                ephemeral: Some(ephemeral.public.to_vec()),
                r#static: Some(static_ct),
                payload: Some(cert_ct),
                ..Default::default()
            }),
            ..Default::default()
        };
        Ok((Responder { noise, ephemeral }, reply.encode_to_vec()))
    }

    /// Reads the `ClientFinish` and derives the transport ciphers.
    pub fn finish(mut self, client_finish: &[u8]) -> anyhow::Result<Session> {
        let msg = wa::HandshakeMessage::decode_from_slice(client_finish)
            .context("decoding the ClientFinish")?;
        let finish = msg
            .client_finish
            .into_option()
            .ok_or_else(|| anyhow!("no client_finish"))?;
        let static_ct = finish
            .r#static
            .ok_or_else(|| anyhow!("ClientFinish without static"))?;
        let payload_ct = finish
            .payload
            .ok_or_else(|| anyhow!("ClientFinish without payload"))?;
        let client_static: [u8; 32] = self
            .noise
            .decrypt(&static_ct)
            .context("decrypting the client static")?
            .try_into()
            .map_err(|_| anyhow!("client static is not 32 bytes"))?;
        self.noise
            .mix_shared_secret(&self.ephemeral.private, &client_static)?; // se
        let payload = self
            .noise
            .decrypt(&payload_ct)
            .context("decrypting the client payload")?;
        let payload =
            wa::ClientPayload::decode_from_slice(&payload).context("decoding the ClientPayload")?;
        let (first, second) = self.noise.finish()?;
        Ok(Session {
            client_static,
            payload,
            read: FrameCipher::new(first),
            write: FrameCipher::new(second),
            ik: false,
        })
    }
}

/// One direction of the post-handshake stream.
pub struct FrameCipher {
    cipher: NoiseCipher,
    counter: u32,
}

impl FrameCipher {
    fn new(cipher: NoiseCipher) -> FrameCipher {
        FrameCipher { cipher, counter: 0 }
    }

    /// Decrypts one frame body into a node (the first plaintext byte is the
    /// flags: bit 2 = zlib).
    pub fn open(&mut self, mut frame: BytesMut) -> anyhow::Result<Node> {
        self.cipher
            .decrypt_in_place_with_counter(self.counter, &mut frame)
            .map_err(|e| anyhow!("decrypting frame {}: {e}", self.counter))?;
        self.counter += 1;
        let plain = whatsapp_rust::wacore_binary::util::unpack(&frame)?;
        Ok(whatsapp_rust::wacore_binary::marshal::unmarshal_ref(&plain)?.to_owned())
    }

    /// Marshals (flags byte 0, uncompressed), encrypts and frames a node.
    pub fn seal(&mut self, node: &Node) -> anyhow::Result<Vec<u8>> {
        let plain = whatsapp_rust::wacore_binary::marshal::marshal(node)?;
        let ct = self
            .cipher
            .encrypt_with_counter(self.counter, &plain)
            .map_err(|e| anyhow!("encrypting frame {}: {e}", self.counter))?;
        self.counter += 1;
        whatsapp_rust::wacore::framing::encode_frame(&ct, None)
    }
}
