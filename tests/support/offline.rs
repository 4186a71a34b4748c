//! The server's offline queue: each message for a companion is kept until
//! the companion acknowledges it (a delivery `<receipt>`, or `<ack
//! class="message">`), and whatever is not acknowledged goes again at the
//! companion's next login, as the real server does. A message for an
//! account with no connection waits there too. Tests may also send a
//! stanza again on purpose (a server that lost the ack).

use whatsapp_rust::wacore_binary::Node;
use whatsapp_rust::wacore_binary::builder::NodeBuilder;

use super::{MockServer, Shared, attr};

/// A message the server delivers to an account's companion.
#[derive(Debug, Clone)]
pub(super) struct Queued {
    pub account: usize,
    pub id: String,
    pub node: Node,
    pub acked: bool,
    /// The login it last went out on (`Shared::logins` then).
    pub login: usize,
}

/// The message ids `node` (from a companion) acknowledges.
pub fn acked_ids(node: &Node) -> Vec<String> {
    let delivery = match node.tag.as_ref() {
        "ack" => attr(node, "class").as_deref() == Some("message"),
        // A delivery receipt (no type, or `inactive` while passive); read
        // receipts and the like come after it.
        "receipt" => matches!(attr(node, "type").as_deref(), None | Some("inactive")),
        _ => false,
    };
    if !delivery {
        return Vec::new();
    }
    let mut ids: Vec<String> = attr(node, "id").into_iter().collect();
    if let Some(list) = node.get_optional_child("list") {
        ids.extend(
            list.get_children_by_tag("item")
                .filter_map(|i| attr(i, "id")),
        );
    }
    ids
}

impl Shared {
    /// Keeps `node` (message `id` for account `k`) until it is acked.
    pub(super) fn enqueue(&self, k: usize, id: &str, node: &Node, delivered: bool) {
        let login = if delivered {
            self.logins.load(std::sync::atomic::Ordering::SeqCst)
        } else {
            0
        };
        self.offline.lock().unwrap().push(Queued {
            account: k,
            id: id.to_string(),
            node: node.clone(),
            acked: false,
            login,
        });
    }

    /// Account `k`'s companion acked what `node` names.
    pub(super) fn take_acks(&self, k: usize, node: &Node) {
        let ids = acked_ids(node);
        if ids.is_empty() {
            return;
        }
        let mut q = self.offline.lock().unwrap();
        for m in q.iter_mut().filter(|m| m.account == k) {
            if ids.contains(&m.id) {
                m.acked = true;
            }
        }
        drop(q);
        self.touch();
    }

    /// What login `login` of account `k` is to get when it goes active:
    /// every message not acked and not sent on this login already, marked
    /// `offline` as the real server marks its queue, then the marker.
    pub(super) fn offline_for(&self, k: usize, login: usize) -> Vec<Node> {
        let mut q = self.offline.lock().unwrap();
        let mut out: Vec<Node> = q
            .iter_mut()
            .filter(|m| m.account == k && !m.acked && m.login != login)
            .map(|m| {
                m.login = login;
                let mut node = m.node.clone();
                node.attrs.insert("offline", "1");
                node
            })
            .collect();
        let count = out.len().to_string();
        out.push(
            NodeBuilder::new("ib")
                .children([NodeBuilder::new("offline").attr("count", count).build()])
                .build(),
        );
        out
    }
}

impl MockServer {
    /// Whether account `k`'s companion acked message `id`.
    pub fn acked(&self, id: &str) -> bool {
        self.shared
            .offline
            .lock()
            .unwrap()
            .iter()
            .any(|m| m.id == id && m.acked)
    }

    /// Message ids not acked yet (they go again at the next login).
    pub fn unacked(&self) -> Vec<String> {
        self.shared
            .offline
            .lock()
            .unwrap()
            .iter()
            .filter(|m| !m.acked)
            .map(|m| m.id.clone())
            .collect()
    }

    /// Sends message `id` again, the very stanza, on its account's live
    /// connections (a server that did not get, or lost, the ack); answers
    /// on how many.
    pub fn redeliver(&self, id: &str) -> usize {
        let found = self
            .shared
            .offline
            .lock()
            .unwrap()
            .iter()
            .find(|m| m.id == id)
            .map(|m| (m.account, m.node.clone()));
        match found {
            Some((k, node)) => self.shared.send_to_account(k, &node),
            None => 0,
        }
    }
}
