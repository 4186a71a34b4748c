//! Who exists on the mock's WhatsApp: accounts (a primary phone, device 0,
//! and the companion a scan links, device 1) and contacts (one device
//! each), every one with a phone number and a LID. The server answers
//! device lists (`usync`) and pre-key bundles (`<key>`) from here, and
//! routes what a companion sends to a contact or a phone into that party's
//! mailbox.
//!
//! Numbering: account `k` is `15551234567 + k` with LID
//! `100000000000001 + k`; a contact's LID is `2` followed by its number
//! padded to 14 digits. Any phone number that is not an account is a
//! contact (the mock's WhatsApp has everyone on it).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use whatsapp_rust::Jid;
use whatsapp_rust::wacore::libsignal::protocol::IdentityKeyPair;
use whatsapp_rust::wacore_binary::Node;
use whatsapp_rust::wacore_binary::builder::NodeBuilder;

use super::contact::{Bundle, Contact};

/// The first account's phone number.
const FIRST_PN: u64 = 15_551_234_567;
/// The first account's LID.
const FIRST_LID: u64 = 100_000_000_000_001;

/// The companion device id a scan links.
pub const COMPANION_DEVICE: u16 = 1;

pub type Party = Arc<tokio::sync::Mutex<Contact>>;

/// One `<enc>` a companion addressed to a party's device, kept until the
/// party reads it.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The sending account.
    pub account: usize,
    pub id: String,
    pub kind: String,
    pub ciphertext: Vec<u8>,
    /// For a group message (`skmsg`): the group (`<id>@g.us`).
    pub group: Option<String>,
}

pub struct Account {
    pub pn: String,
    pub lid: String,
    /// The primary phone as a Signal party (its identity is the account
    /// key that signs companions).
    pub phone: Party,
    /// A copy of the phone's identity for signing without the async lock.
    pub phone_identity: IdentityKeyPair,
    /// Names the account's ADV identity (in device identities and key
    /// index lists).
    pub raw_id: u32,
    /// The companion's pre-keys from its latest upload, minus those handed
    /// out since.
    pub bundle: Option<Bundle>,
    /// What the companion signed in `<pair-device-sign>` (its bundle's
    /// `<device-identity>`).
    pub device_identity: Option<Vec<u8>>,
    /// A companion is linked (device 1 is in the device list).
    pub linked: bool,
    /// The phone sent its app-state key share to this companion.
    pub key_shared: bool,
    /// What the companion sent the phone.
    pub mailbox: Vec<Envelope>,
}

pub struct ContactEntry {
    pub lid: String,
    pub party: Party,
    pub mailbox: Vec<Envelope>,
    /// Messages addressed to this contact (stanzas, not devices).
    pub messages: usize,
}

/// A party named by a JID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// Account `k`'s device `device` (0 the phone, 1 the companion).
    Account(usize, u16),
    /// A contact, by phone number.
    Contact(String),
}

#[derive(Default)]
pub struct Directory {
    pub accounts: Vec<Account>,
    pub contacts: BTreeMap<String, ContactEntry>,
}

pub type SharedDirectory = Mutex<Directory>;

fn contact_lid(pn: &str) -> String {
    format!("2{pn:0>14}")
}

impl Directory {
    /// Account `k`, made (with those before it) if need be.
    pub fn account(&mut self, k: usize) -> &mut Account {
        while self.accounts.len() <= k {
            let i = self.accounts.len() as u64;
            self.push_account((FIRST_PN + i).to_string());
        }
        &mut self.accounts[k]
    }

    fn push_account(&mut self, pn: String) -> usize {
        let i = self.accounts.len();
        let lid = (FIRST_LID + i as u64).to_string();
        let phone = Contact::new(&pn, &lid);
        let phone_identity = phone.identity().clone();
        self.accounts.push(Account {
            pn,
            lid,
            phone: Arc::new(tokio::sync::Mutex::new(phone)),
            phone_identity,
            raw_id: rand_010::random(),
            bundle: None,
            device_identity: None,
            linked: false,
            key_shared: false,
            mailbox: Vec::new(),
        });
        i
    }

    /// The account a companion logs in as (by its phone number); one the
    /// mock never linked is made on the spot, so any paired client may log
    /// in.
    pub fn login_account(&mut self, pn: &str) -> usize {
        if let Some(k) = self.accounts.iter().position(|a| a.pn == pn) {
            return k;
        }
        // Numbers in the scheme keep their index.
        if let Ok(n) = pn.parse::<u64>()
            && let Some(k) = n.checked_sub(FIRST_PN).filter(|&k| k < 10_000)
            && self.accounts.len() <= k as usize
        {
            self.account(k as usize);
            return k as usize;
        }
        self.push_account(pn.to_string())
    }

    /// The contact with phone number `pn`, made if need be.
    pub fn contact(&mut self, pn: &str) -> &mut ContactEntry {
        self.contacts.entry(pn.to_string()).or_insert_with(|| {
            let lid = contact_lid(pn);
            ContactEntry {
                party: Arc::new(tokio::sync::Mutex::new(Contact::new(pn, &lid))),
                lid,
                mailbox: Vec::new(),
                messages: 0,
            }
        })
    }

    /// Who a JID names (`user[:device]@s.whatsapp.net` or `…@lid`). A
    /// phone number nobody has yet becomes a contact; an unknown LID names
    /// nobody.
    pub fn resolve(&mut self, jid: &str) -> Option<Who> {
        let jid = jid.parse::<Jid>().ok()?;
        let user = jid.user.to_string();
        if jid.is_pn() {
            if let Some(k) = self.accounts.iter().position(|a| a.pn == user) {
                return Some(Who::Account(k, jid.device));
            }
            if user.is_empty() || !user.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            self.contact(&user);
            return Some(Who::Contact(user));
        }
        if jid.is_lid() {
            if let Some(k) = self.accounts.iter().position(|a| a.lid == user) {
                return Some(Who::Account(k, jid.device));
            }
            return self
                .contacts
                .iter()
                .find(|(_, c)| c.lid == user)
                .map(|(pn, _)| Who::Contact(pn.clone()));
        }
        None
    }

    /// The phone number, LID and devices of a party.
    fn devices(&self, who: &Who) -> Option<Listing> {
        match who {
            Who::Account(k, _) => {
                let a = self.accounts.get(*k)?;
                let mut devices = vec![(0, None)];
                if a.linked {
                    devices.push((COMPANION_DEVICE, Some(super::phone::KEY_INDEX)));
                }
                Some((a.pn.clone(), a.lid.clone(), devices))
            }
            Who::Contact(pn) => {
                let c = self.contacts.get(pn)?;
                Some((pn.clone(), c.lid.clone(), vec![(0, None)]))
            }
        }
    }

    /// The `<user>` of a `usync` answer for the request's `<user>`,
    /// carrying the protocols asked for (`devices`, `lid`, `contact`; the
    /// others are left out, which both clients take as "no data").
    pub fn usync_user(&mut self, user: &Node, protocols: &[String]) -> Node {
        let jid = super::attr(user, "jid").or_else(|| {
            // `<contact>+15550001111</contact>`: a phone number to look up.
            let phone = user
                .get_optional_child("contact")
                .and_then(|c| match &c.content {
                    Some(whatsapp_rust::wacore_binary::node::NodeContent::Bytes(b)) => {
                        String::from_utf8(b.clone()).ok()
                    }
                    Some(whatsapp_rust::wacore_binary::node::NodeContent::String(s)) => {
                        Some(s.to_string())
                    }
                    _ => None,
                })?;
            Some(format!("{}@s.whatsapp.net", phone.trim_start_matches('+')))
        });
        let Some(jid) = jid else {
            return NodeBuilder::new("user").build();
        };
        let who = self.resolve(&jid);
        let raw_id = match &who {
            Some(Who::Account(k, _)) => self.accounts.get(*k).map(|a| (a.raw_id, *k)),
            _ => None,
        };
        let found = who.as_ref().and_then(|w| self.devices(w));
        let mut children = Vec::new();
        for p in protocols {
            match (p.as_str(), &found) {
                ("devices", Some((_, _, devices))) => {
                    let list = devices
                        .iter()
                        .map(|(id, key_index)| {
                            let mut d = NodeBuilder::new("device").attr("id", id.to_string());
                            if let Some(ki) = key_index {
                                d = d.attr("key-index", ki.to_string());
                            }
                            d.build()
                        })
                        .collect::<Vec<_>>();
                    let mut devs = vec![NodeBuilder::new("device-list").children(list).build()];
                    if let Some((raw_id, k)) = raw_id
                        && devices.len() > 1
                    {
                        let signed = super::phone::key_index_list(
                            &self.accounts[k].phone_identity,
                            raw_id,
                            &[super::phone::KEY_INDEX],
                        );
                        devs.push(
                            NodeBuilder::new("key-index-list")
                                .attr("ts", super::now_secs().to_string())
                                .bytes(signed)
                                .build(),
                        );
                    }
                    children.push(NodeBuilder::new("devices").children(devs).build());
                }
                ("lid", Some((_, lid, _))) => children.push(
                    NodeBuilder::new("lid")
                        .attr("val", format!("{lid}@lid"))
                        .build(),
                ),
                ("contact", Some((pn, _, _))) => children.push(
                    NodeBuilder::new("contact")
                        .attr("type", "in")
                        .bytes(format!("+{pn}").into_bytes())
                        .build(),
                ),
                ("contact", None) => {
                    children.push(NodeBuilder::new("contact").attr("type", "out").build())
                }
                _ => {}
            }
        }
        NodeBuilder::new("user")
            .attr("jid", jid)
            .children(children)
            .build()
    }

    /// The party that hands out the pre-key bundle for `jid`, or the
    /// companion bundle itself (answered without a lock).
    pub fn bundle_source(&mut self, jid: &str) -> BundleSource {
        match self.resolve(jid) {
            Some(Who::Account(k, 0)) => BundleSource::Party(self.accounts[k].phone.clone()),
            Some(Who::Account(k, COMPANION_DEVICE)) => {
                let a = &mut self.accounts[k];
                match a.bundle.as_mut() {
                    Some(b) => BundleSource::Ready(b.user_node(jid, a.device_identity.as_deref())),
                    None => BundleSource::Missing,
                }
            }
            Some(Who::Contact(pn)) if jid_device(jid) == 0 => {
                BundleSource::Party(self.contact(&pn).party.clone())
            }
            _ => BundleSource::Missing,
        }
    }

    /// Puts an `<enc>` for `to` (one recipient device) into its mailbox.
    /// Answers who got it.
    pub fn post(&mut self, to: &str, envelope: Envelope) -> Option<Who> {
        let who = self.resolve(to)?;
        match &who {
            Who::Account(k, 0) => self.accounts[*k].mailbox.push(envelope),
            Who::Contact(pn) => self.contact(pn).mailbox.push(envelope),
            // Another companion: the mock links one per account.
            Who::Account(..) => return None,
        }
        Some(who)
    }
}

/// A party's phone number, LID and device ids with their key index.
type Listing = (String, String, Vec<(u16, Option<u32>)>);

pub enum BundleSource {
    Party(Party),
    Ready(Node),
    Missing,
}

/// The device part of a JID (0 when absent).
pub fn jid_device(jid: &str) -> u16 {
    jid.parse::<Jid>().map(|j| j.device).unwrap_or(0)
}
