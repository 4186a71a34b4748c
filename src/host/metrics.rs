//! Counters for `/metrics`, fed from host events and the script engines.
//! prometheus-client does the text format; the few values that are a
//! snapshot at scrape time (instances by state, webhook totals) are set then.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::HostEvent;
use crate::lifecycle::{State, StateName};

type Labels = Vec<(String, String)>;

fn label(k: &str, v: &str) -> Labels {
    vec![(k.to_string(), v.to_string())]
}

fn hook_histogram() -> Histogram {
    // 0.1 ms .. ~1.6 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 15))
}

fn http_histogram() -> Histogram {
    // 1 ms .. ~33 s: a request may take up to its timeout.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The process's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    instances: Family<Labels, Gauge>,
    state_changes: Family<Labels, Counter>,
    reconnects: Family<Labels, Counter>,
    attempts: Family<Labels, Gauge>,
    messages: Family<Labels, Counter>,
    hook_calls: Family<Labels, Counter>,
    hook_errors: Family<Labels, Counter>,
    hook_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    reloads: Family<Labels, Counter>,
    webhook_delivered: Family<Labels, Gauge>,
    webhook_failed: Family<Labels, Gauge>,
    webhook_dropped: Family<Labels, Gauge>,
    script_errors: Counter,
    http_requests: Family<Labels, Counter>,
    http_seconds: Histogram,
    send_failed: Counter,
    inbox_redelivered: Counter,
    inbox_commit_failed: Counter,
    pruned: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let m = Metrics {
            registry: Mutex::new(Registry::with_prefix("moonwire")),
            instances: Default::default(),
            state_changes: Default::default(),
            reconnects: Default::default(),
            attempts: Default::default(),
            messages: Default::default(),
            hook_calls: Default::default(),
            hook_errors: Default::default(),
            hook_seconds: Family::new_with_constructor(hook_histogram),
            reloads: Default::default(),
            webhook_delivered: Default::default(),
            webhook_failed: Default::default(),
            webhook_dropped: Default::default(),
            script_errors: Default::default(),
            http_requests: Default::default(),
            http_seconds: http_histogram(),
            send_failed: Default::default(),
            inbox_redelivered: Default::default(),
            inbox_commit_failed: Default::default(),
            pruned: Default::default(),
        };
        {
            let mut r = m.registry.lock().unwrap_or_else(|e| e.into_inner());
            r.register(
                "instances",
                "Instances by lifecycle state",
                m.instances.clone(),
            );
            r.register(
                "state_changes",
                "Lifecycle state changes, by new state",
                m.state_changes.clone(),
            );
            r.register(
                "reconnects",
                "Reconnects scheduled, by close reason",
                m.reconnects.clone(),
            );
            r.register(
                "connection_attempt",
                "Each instance's latest attempt number: the backoff counter its state lines and on_close show",
                m.attempts.clone(),
            );
            r.register(
                "messages",
                "Messages handled, by direction",
                m.messages.clone(),
            );
            r.register(
                "hook_calls",
                "Script hook calls, by hook",
                m.hook_calls.clone(),
            );
            r.register(
                "hook_errors",
                "Script hook calls that failed, by hook",
                m.hook_errors.clone(),
            );
            r.register(
                "hook_duration_seconds",
                "Script hook run time",
                m.hook_seconds.clone(),
            );
            r.register(
                "script_reloads",
                "Script reloads, by result",
                m.reloads.clone(),
            );
            r.register(
                "script_errors",
                "Script errors reported",
                m.script_errors.clone(),
            );
            r.register(
                "http_requests",
                "Script HTTP requests (bot.http), by status class or failure",
                m.http_requests.clone(),
            );
            r.register(
                "http_request_duration_seconds",
                "Script HTTP request time, queueing and body included",
                m.http_seconds.clone(),
            );
            r.register(
                "send_failed",
                "Sends given up on (bad recipient, logout, refused, out of tries)",
                m.send_failed.clone(),
            );
            r.register(
                "inbox_redelivered",
                "Messages that arrived again and were not handed to scripts twice",
                m.inbox_redelivered.clone(),
            );
            r.register(
                "inbox_commit_failures",
                "Messages whose inbox commit failed (held back; the server or the actor tries again)",
                m.inbox_commit_failed.clone(),
            );
            r.register(
                "delivery_pruned_rows",
                "Inbox rows and finished sends pruned by age or count, by table",
                m.pruned.clone(),
            );
            r.register(
                "webhook_delivered",
                "Webhook events delivered",
                m.webhook_delivered.clone(),
            );
            r.register(
                "webhook_failed",
                "Webhook events given up on",
                m.webhook_failed.clone(),
            );
            r.register(
                "webhook_dropped",
                "Webhook events dropped on a full queue",
                m.webhook_dropped.clone(),
            );
        }
        m
    }
}

impl crate::automation::http::HttpObserver for Metrics {
    fn request_done(&self, class: &'static str, elapsed: Duration) {
        self.http_requests
            .get_or_create(&label("class", class))
            .inc();
        self.http_seconds.observe(elapsed.as_secs_f64());
    }
}

/// The metrics of one hook (`on_message`, `command`, ...).
#[derive(Clone)]
pub struct HookHandles {
    calls: Counter,
    errors: Counter,
    seconds: Histogram,
}

impl HookHandles {
    pub fn record(&self, elapsed: Duration, ok: bool) {
        self.calls.inc();
        if !ok {
            self.errors.inc();
        }
        self.seconds.observe(elapsed.as_secs_f64());
    }
}

/// Webhook totals, as the webhook workers count them.
#[derive(Debug, Clone, Default)]
pub struct WebhookTotals {
    pub url: String,
    pub delivered: u64,
    pub failed: u64,
    pub dropped: u64,
}

impl Metrics {
    pub fn observe(&self, ev: &HostEvent) {
        match ev {
            HostEvent::State {
                instance,
                transition,
                ..
            } => {
                self.state_changes
                    .get_or_create(&label("state", transition.state.name().as_str()))
                    .inc();
                if let State::Reconnecting { reason, .. } = &transition.state {
                    self.reconnects
                        .get_or_create(&label("reason", reason.kind.as_str()))
                        .inc();
                }
                if let State::Connecting { attempt } | State::Reconnecting { attempt, .. } =
                    &transition.state
                {
                    self.attempts
                        .get_or_create(&label("instance", instance))
                        .set(i64::from(*attempt));
                }
            }
            HostEvent::MessageIn { .. } => {
                self.messages.get_or_create(&label("direction", "in")).inc();
            }
            HostEvent::MessageOut { .. } => {
                self.messages
                    .get_or_create(&label("direction", "out"))
                    .inc();
            }
            HostEvent::ScriptError { .. } => {
                self.script_errors.inc();
            }
            HostEvent::SendFailed { .. } => {
                self.send_failed.inc();
            }
            HostEvent::Qr { .. } | HostEvent::Group { .. } => {}
        }
    }

    pub fn inbox_redelivered(&self, n: u64) {
        self.inbox_redelivered.inc_by(n);
    }

    pub fn inbox_commit_failed(&self, n: u64) {
        self.inbox_commit_failed.inc_by(n);
    }

    pub fn delivery_pruned(&self, inbox: u64, outbox: u64) {
        self.pruned
            .get_or_create(&label("table", "inbox"))
            .inc_by(inbox);
        self.pruned
            .get_or_create(&label("table", "outbox"))
            .inc_by(outbox);
    }

    pub fn hook(&self, hook: &str, elapsed: Duration, ok: bool) {
        self.hook_handles(hook).record(elapsed, ok);
    }

    /// One hook's metrics, to keep: recording through them takes no
    /// family lookup (a label allocation and a lock) per handler.
    pub fn hook_handles(&self, hook: &str) -> HookHandles {
        let l = label("hook", hook);
        HookHandles {
            calls: self.hook_calls.get_or_create(&l).clone(),
            errors: self.hook_errors.get_or_create(&l).clone(),
            seconds: self.hook_seconds.get_or_create(&l).clone(),
        }
    }

    pub fn reload(&self, swapped: bool) {
        let result = if swapped { "swapped" } else { "refused" };
        self.reloads.get_or_create(&label("result", result)).inc();
    }

    /// The text exposition, with scrape-time values filled in.
    pub fn render(&self, states: &[StateName], webhooks: &[WebhookTotals]) -> String {
        for name in StateName::ALL {
            let n = states.iter().filter(|s| **s == name).count();
            self.instances
                .get_or_create(&label("state", name.as_str()))
                .set(n as i64);
        }
        for w in webhooks {
            let l = label("url", &w.url);
            self.webhook_delivered
                .get_or_create(&l)
                .set(w.delivered as i64);
            self.webhook_failed.get_or_create(&l).set(w.failed as i64);
            self.webhook_dropped.get_or_create(&l).set(w.dropped as i64);
        }
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = encode(&mut out, &registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::{Reason, ReasonKind, StatusRow, Transition};

    #[test]
    fn events_and_hooks_show_up_in_the_text() {
        let m = Metrics::default();
        let row = StatusRow {
            connection_status: crate::lifecycle::ConnectionStatus::Connecting,
            state: StateName::Reconnecting,
            last_reason_code: Some(408),
            last_reason_kind: Some(ReasonKind::ConnectionLost),
            last_reason_message: None,
            last_change_at: 0,
            jid: None,
            push_name: None,
            logout_by: None,
        };
        m.observe(&HostEvent::State {
            instance: "a".into(),
            transition: Transition {
                state: State::Reconnecting {
                    attempt: 3,
                    delay_ms: 5,
                    reason: Reason::new(Some(408), ReasonKind::ConnectionLost),
                    by_script: false,
                },
                at: 0,
            },
            row,
        });
        m.hook("on_message", Duration::from_millis(3), true);
        m.hook("on_message", Duration::from_millis(3), false);
        m.reload(true);
        use crate::automation::http::HttpObserver;
        m.request_done("2xx", Duration::from_millis(20));
        m.request_done("2xx", Duration::from_millis(40));
        m.request_done("refused", Duration::from_millis(1));
        let text = m.render(
            &[StateName::Open, StateName::Open, StateName::Closed],
            &[WebhookTotals {
                url: "http://x/h".into(),
                delivered: 3,
                failed: 1,
                dropped: 2,
            }],
        );
        for needle in [
            "moonwire_instances{state=\"open\"} 2",
            "moonwire_instances{state=\"closed\"} 1",
            "moonwire_instances{state=\"pairing\"} 0",
            "moonwire_reconnects_total{reason=\"connection_lost\"} 1",
            "moonwire_connection_attempt{instance=\"a\"} 3",
            "moonwire_hook_calls_total{hook=\"on_message\"} 2",
            "moonwire_hook_errors_total{hook=\"on_message\"} 1",
            "moonwire_hook_duration_seconds_count{hook=\"on_message\"} 2",
            "moonwire_script_reloads_total{result=\"swapped\"} 1",
            "moonwire_webhook_dropped{url=\"http://x/h\"} 2",
            "moonwire_http_requests_total{class=\"2xx\"} 2",
            "moonwire_http_requests_total{class=\"refused\"} 1",
            "moonwire_http_request_duration_seconds_count 3",
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
    }

    #[test]
    fn delivery_counts_show_up_in_the_text() {
        let m = Metrics::default();
        m.observe(&HostEvent::SendFailed {
            instance: "a".into(),
            id: "x".into(),
            chat: "c".into(),
            reason: "logged out".into(),
        });
        m.inbox_redelivered(3);
        m.inbox_commit_failed(4);
        m.delivery_pruned(5, 2);
        m.delivery_pruned(1, 0);
        let text = m.render(&[], &[]);
        for needle in [
            "moonwire_send_failed_total 1",
            "moonwire_inbox_redelivered_total 3",
            "moonwire_inbox_commit_failures_total 4",
            "moonwire_delivery_pruned_rows_total{table=\"inbox\"} 6",
            "moonwire_delivery_pruned_rows_total{table=\"outbox\"} 2",
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
    }
}
