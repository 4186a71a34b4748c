//! Durable delivery on WhatsApp: each inbound batch is committed to the
//! inbox before the library acks it to the server (its inbound durability
//! hook), and the server's acks of our own sends are reported, so the host
//! knows which sends were never confirmed.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use wacore::types::events::InboundMessage;
use whatsapp_rust::wacore_binary::NodeRef;
use whatsapp_rust::{Client, InboundDurabilityHook};

use super::{AttemptState, incoming};
use crate::channel::EventKind;
use crate::store::{InboxItem, Store};

/// The hook of one attempt: commits the batch, then reports the rows that
/// are new, in commit order.
pub(super) struct InboxHook {
    pub st: Arc<AttemptState>,
    pub store: Arc<Store>,
    pub instance: String,
    /// Commit and report under one lock, so the host sees rows in `seq`
    /// order even when live batches commit concurrently.
    pub order: Mutex<()>,
}

#[async_trait]
impl InboundDurabilityHook for InboxHook {
    /// The library's interface is `anyhow`; an error suppresses the acks of
    /// the whole batch and the server delivers it again.
    async fn on_messages(
        &self,
        _client: Arc<Client>,
        batch: &[InboundMessage],
    ) -> anyhow::Result<()> {
        let msgs: Vec<_> = batch
            .iter()
            .map(|m| {
                let mut inc = incoming(&m.message, &m.info);
                if inc.kind == "poll_vote" {
                    inc.votes = super::votes(&self.st.backend, &m.message, &inc);
                }
                inc
            })
            .collect();
        let texts = msgs
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()?;
        let items: Vec<InboxItem<'_>> = msgs
            .iter()
            .zip(&texts)
            .map(|(m, t)| InboxItem {
                chat: &m.chat,
                sender: &m.sender,
                id: &m.id,
                message: t,
            })
            .collect();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let _order = self.order.lock().unwrap_or_else(|e| e.into_inner());
        let seqs = self
            .store
            .inbox_commit(&self.instance, &items, now)
            .map_err(|e| {
                tracing::error!(instance = %self.instance, error = %e, n = items.len(), "inbox commit failed; the server will deliver these again");
                self.st.emit(EventKind::InboxFailed { n: items.len() });
                e
            })?;
        for (seq, message) in seqs.into_iter().zip(msgs) {
            match seq {
                Some(seq) => self.st.emit(EventKind::Inbox { seq, message }),
                None => {
                    tracing::debug!(instance = %self.instance, id = %message.id, "delivered again; handled once already")
                }
            }
        }
        Ok(())
    }
}

/// The server's `<ack class="message" id=…>` of a message we sent, as a
/// channel event (`error` when it refused it).
pub(super) fn send_ack(node: &NodeRef<'_>) -> Option<EventKind> {
    if node.tag.as_ref() != "ack" {
        return None;
    }
    let attr = |k: &str| node.get_attr(k).map(|v| v.as_str().to_string());
    if attr("class").as_deref() != Some("message") {
        return None;
    }
    Some(EventKind::SendAcked {
        id: attr("id")?,
        error: attr("error"),
    })
}
