//! Messages between companions and the parties the mock plays, and hooks
//! for tests of the server's own answers.

use anyhow::{anyhow, bail};
use whatsapp_rust::Jid;
use whatsapp_rust::wacore::libsignal::protocol::ProtocolAddress;
use whatsapp_rust::wacore_binary::Node;
use whatsapp_rust::waproto::whatsapp as wa;

use super::directory::{COMPANION_DEVICE, Who};
use super::{MockServer, contact, stanzas};

impl MockServer {
    /// The contact `user` (a phone number) writes `text` to the first
    /// account's companion: a real Signal message (`pkmsg` first, from the
    /// pre-keys the companion uploaded at login, then `msg`). Answers the
    /// message id. With the companion offline it waits for its next login.
    pub async fn message_from(
        &self,
        user: &str,
        push_name: &str,
        text: &str,
    ) -> anyhow::Result<String> {
        self.message_to(0, user, push_name, text).await
    }

    /// As [`Self::message_from`], to account `k`'s companion.
    pub async fn message_to(
        &self,
        k: usize,
        user: &str,
        push_name: &str,
        text: &str,
    ) -> anyhow::Result<String> {
        let message = wa::Message {
            conversation: Some(text.to_string()),
            ..Default::default()
        };
        self.send_from(k, user, push_name, &message).await
    }

    /// The contact `user` sends any `message` (media, a quote, a
    /// reaction, a poll vote, ...) to account `k`'s companion, encrypted as
    /// [`Self::message_from`] does. Answers the message id.
    pub async fn send_from(
        &self,
        k: usize,
        user: &str,
        push_name: &str,
        message: &wa::Message,
    ) -> anyhow::Result<String> {
        let (party, lid) = {
            let mut dir = self.shared.directory.lock().unwrap();
            if !user.bytes().all(|b| b.is_ascii_digit()) || user.is_empty() {
                bail!("a contact is a phone number, not {user:?}");
            }
            if dir.accounts.iter().any(|a| a.pn == user) {
                bail!("{user} is an account, not a contact");
            }
            let c = dir.contact(user);
            (c.party.clone(), c.lid.clone())
        };
        let from = format!("{user}@s.whatsapp.net");
        let mut party = party.lock().await;
        let (id, mut node) =
            stanzas::sealed_message(&self.shared, k, &mut party, &from, push_name, message).await?;
        // The server names the sender's LID beside its number.
        let lid = format!("{lid}@lid")
            .parse::<Jid>()
            .map_err(|e| anyhow!("{e}"))?;
        node.attrs.insert("sender_lid", lid);
        // Kept until acked; with no connection up it waits for the next
        // login.
        let delivered = self.shared.send_to_account(k, &node) > 0;
        self.shared.enqueue(k, &id, &node, delivered);
        Ok(id)
    }

    /// The contact `user` tells account `k`'s companion it got (`kind`
    /// "read", "played", or "" for delivered) the messages `ids`, as the
    /// server relays a phone's receipt.
    pub fn receipt_from(&self, k: usize, user: &str, ids: &[&str], kind: &str) -> usize {
        let from: Jid = match format!("{user}@s.whatsapp.net").parse() {
            Ok(j) => j,
            Err(_) => return 0,
        };
        let mut b = whatsapp_rust::wacore_binary::builder::NodeBuilder::new("receipt")
            .attr("from", from)
            .attr("id", ids.first().copied().unwrap_or_default().to_string())
            .attr("t", super::now_secs().to_string());
        if !kind.is_empty() {
            b = b.attr("type", kind.to_string());
        }
        if ids.len() > 1 {
            b = b.children([
                whatsapp_rust::wacore_binary::builder::NodeBuilder::new("list")
                    .children(ids[1..].iter().map(|id| {
                        whatsapp_rust::wacore_binary::builder::NodeBuilder::new("item")
                            .attr("id", id.to_string())
                            .build()
                    }))
                    .build(),
            ]);
        }
        self.shared.send_to_account(k, &b.build())
    }

    /// Decrypts what companions sent the contact `user` since the last
    /// call (each `<enc>` addressed to its device, `pkmsg` or `msg`) into
    /// its inbox; answers the new messages, or an error naming those it
    /// could not decrypt.
    pub async fn deliver_to(&self, user: &str) -> anyhow::Result<Vec<wa::Message>> {
        let (new, failed) = self.deliver(user).await;
        if !failed.is_empty() {
            bail!(
                "{user} could not decrypt {} message(s) (read {} others): {}",
                failed.len(),
                new.len(),
                failed.join("; ")
            );
        }
        Ok(new)
    }

    /// As [`Self::deliver_to`], answering both what was read and why each
    /// of the others could not be: every envelope is tried, so one the
    /// contact cannot read (as a real phone could not) hides no other.
    pub async fn deliver(&self, user: &str) -> (Vec<wa::Message>, Vec<String>) {
        let (party, mail, accounts) = {
            let mut dir = self.shared.directory.lock().unwrap();
            let c = dir.contact(user);
            let mail = std::mem::take(&mut c.mailbox);
            let party = c.party.clone();
            let accounts: Vec<String> = dir.accounts.iter().map(|a| a.pn.clone()).collect();
            (party, mail, accounts)
        };
        let mut party = party.lock().await;
        let mut new = Vec::new();
        let mut failed = Vec::new();
        for env in mail {
            let Some(pn) = accounts.get(env.account) else {
                continue;
            };
            let from = ProtocolAddress::new(pn, u32::from(COMPANION_DEVICE).into());
            let read = match &env.group {
                Some(group) => {
                    party
                        .group_receive(group, &from, &env.id, &env.ciphertext)
                        .await
                }
                None => {
                    party
                        .receive(&from, &env.id, &env.kind, &env.ciphertext)
                        .await
                }
            };
            match read {
                Ok(true) => new.extend(party.inbox.last().cloned()),
                Ok(false) => {}
                Err(e) => failed.push(format!("{} ({}): {e:#}", env.id, env.kind)),
            }
        }
        (new, failed)
    }

    /// Everything the contact `user` has decrypted so far.
    pub async fn inbox(&self, user: &str) -> Vec<wa::Message> {
        let party = self
            .shared
            .directory
            .lock()
            .unwrap()
            .contact(user)
            .party
            .clone();
        party.lock().await.inbox.clone()
    }

    /// What the server answers `node` from a client logged in as account
    /// `account` (`None`: a pairing client), without a connection: for
    /// tests of the answers themselves.
    pub async fn answer(&self, account: Option<usize>, node: &Node) -> Vec<Node> {
        stanzas::replies(&self.shared, account, node).await
    }

    /// Takes `upload` (a pre-key upload IQ) as account `k`'s companion's,
    /// as a login's would be.
    pub fn upload_as(&self, k: usize, upload: &Node) -> anyhow::Result<()> {
        let bundle = contact::Bundle::from_upload(upload)?;
        let mut dir = self.shared.directory.lock().unwrap();
        let a = dir.account(k);
        a.bundle = Some(contact::Bundle::merge(a.bundle.take(), bundle));
        Ok(())
    }

    /// Takes `node` as a `<message>` account `k`'s companion sent: its
    /// `<enc>`s go to their recipients' mailboxes.
    pub fn route_as(&self, k: usize, node: &Node) {
        stanzas::route_message(&self.shared, k, node);
    }

    /// Account `k`'s companion's pre-keys as the server holds them.
    pub fn bundle_of(&self, k: usize) -> Option<contact::Bundle> {
        let dir = self.shared.directory.lock().unwrap();
        dir.accounts.get(k).and_then(|a| a.bundle.clone())
    }
}

/// Who a recipient JID names, for tests that look at routing.
pub fn who(server: &MockServer, jid: &str) -> Option<Who> {
    server.shared.directory.lock().unwrap().resolve(jid)
}
