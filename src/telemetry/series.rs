//! Every series Natter exports, with its kind, labels and help text: the recorder describes them
//! (Prometheus `# HELP` lines), and docs/metrics.md lists the same ones (tests keep the code, this
//! table and the document equal).

/// What a series is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One series: its name, kind, labels (comma-separated, empty for none) and help text.
#[derive(Debug, Clone, Copy)]
pub struct Series {
    pub name: &'static str,
    pub kind: Kind,
    pub labels: &'static str,
    pub help: &'static str,
}

const fn s(name: &'static str, kind: Kind, labels: &'static str, help: &'static str) -> Series {
    Series { name, kind, labels, help }
}

use Kind::{Counter, Gauge, Histogram};

/// The prefix of the process series (`natter_process_cpu_seconds_total`, …), which the
/// `metrics-process` collector writes and describes itself.
pub const PROCESS_PREFIX: &str = "natter_";

/// The process series the collector exports on Linux (documented with the others).
pub const PROCESS: &[Series] = &[
    s("natter_process_cpu_seconds_total", Counter, "", "User and system CPU time spent, in seconds."),
    s("natter_process_resident_memory_bytes", Gauge, "", "Resident memory size, in bytes."),
    s("natter_process_virtual_memory_bytes", Gauge, "", "Virtual memory size, in bytes."),
    s("natter_process_virtual_memory_max_bytes", Gauge, "", "Largest virtual memory the process may use, in bytes."),
    s("natter_process_open_fds", Gauge, "", "Open file descriptors (sockets included)."),
    s("natter_process_max_fds", Gauge, "", "The open-file-descriptor limit."),
    s("natter_process_start_time_seconds", Gauge, "", "Start time of the process, unix seconds."),
    s("natter_process_threads", Gauge, "", "OS threads in the process."),
];

/// Natter's own series.
pub const SERIES: &[Series] = &[
    // Connections and frames.
    s("natter_ws_connections", Gauge, "", "WebSocket connections open on this node."),
    s(
        "natter_ws_starting",
        Gauge,
        "",
        "WebSocket sessions starting on this node (authenticated, not yet subscribed); bounded by ws.max_starting.",
    ),
    s(
        "natter_ws_connects_total",
        Counter,
        "result",
        "WebSocket connects, by result: ok, rejected, auth_timeout, too_many_connections, \
         node_full, busy and behind (refused 503 with Retry-After: ws.max_connections, \
         ws.max_starting, and a request the node got to only after http.head_timeout_ms).",
    ),
    s("natter_ws_disconnects_total", Counter, "code", "WebSocket closes, by close code (client: the client closed)."),
    s("natter_ws_frames_received_total", Counter, "", "WebSocket messages received from clients."),
    s("natter_ws_frames_sent_total", Counter, "", "WebSocket frames sent to clients."),
    s(
        "natter_ws_slow_consumer_drops_total",
        Counter,
        "",
        "Connections closed (4002) because their client stopped reading.",
    ),
    // Messages.
    s(
        "natter_messages_received_total",
        Counter,
        "kind",
        "Messages accepted for storage, by conversation kind: direct, group.",
    ),
    s("natter_messages_delivered_total", Counter, "", "Message pushes written to a local session."),
    s("natter_message_ack_duration_seconds", Histogram, "", "From a send's arrival to its commit (the sender's ack)."),
    s("natter_delivery_duration_seconds", Histogram, "", "From a message's commit to its push on a receiving session."),
    s("natter_append_batch_size", Histogram, "", "Messages committed per group-commit batch."),
    s(
        "natter_append_batch_splits_total",
        Counter,
        "",
        "Batches split because the database refused one of their messages.",
    ),
    s("natter_unread_pushes_total", Counter, "", "Unread-count events pushed to sessions."),
    s(
        "natter_unrenderable_fields_total",
        Counter,
        "field",
        "Stored fields left out of a rendered message because they were not valid (meta).",
    ),
    // Store.
    s("natter_db_query_duration_seconds", Histogram, "op", "Database statements, by operation."),
    s(
        "natter_db_errors_total",
        Counter,
        "kind",
        "Database errors met by requests and writers, by kind: pool_timeout, io, database, protocol, other.",
    ),
    s("natter_db_pool_connections", Gauge, "state", "Database pool connections, by state: in_use, idle."),
    s(
        "natter_db_pool_acquire_duration_seconds",
        Histogram,
        "for",
        "Waiting for a pooled connection, for a read or a write transaction (with SQLite's BEGIN IMMEDIATE); statements run straight on the pool are not timed here.",
    ),
    s("natter_connect_subject_batch_size", Histogram, "", "Connections whose subjects one batched read resolved."),
    s("natter_presence_batch_size", Histogram, "", "Presence changes written per batch."),
    s(
        "natter_presence_transitions_total",
        Counter,
        "status",
        "Users going online or offline (cluster-wide transitions decided here).",
    ),
    // Bus.
    s("natter_bus_connected", Gauge, "", "1 while the bus (NATS, or the in-process one) is connected, else 0."),
    s("natter_bus_publish_duration_seconds", Histogram, "", "Bus publishes, queued to done."),
    s(
        "natter_bus_publish_errors_total",
        Counter,
        "reason",
        "Bus publishes that failed, by reason: error, timeout (receivers catch up from the store).",
    ),
    s(
        "natter_bus_publish_dropped_total",
        Counter,
        "",
        "Bus payloads not published: the publish queue was full or the payload could not be encoded.",
    ),
    s(
        "natter_bus_connection_errors_total",
        Counter,
        "connection",
        "NATS connections lost or refused, by connection: publisher, subscriber (each reconnects by itself).",
    ),
    // HTTP and auth.
    s("natter_http_requests_total", Counter, "route,status", "HTTP requests, by route pattern and status."),
    s("natter_http_request_duration_seconds", Histogram, "route", "HTTP request handling time, by route pattern."),
    s(
        "natter_auth_failures_total",
        Counter,
        "reason",
        "Refused authentications, by reason (error code, rongcloud_signature, tencent_usersig, …).",
    ),
    s(
        "natter_password_queue_refusals_total",
        Counter,
        "work",
        "Password hashing refused because its queue was full, by work: login, register.",
    ),
    // Webhooks and hooks.
    s("natter_webhook_events_total", Counter, "event", "Webhook events written to the outbox, by event."),
    s(
        "natter_webhook_deliveries_total",
        Counter,
        "event,result",
        "Webhook delivery attempts, by event and result: delivered, retry, dead, gone, skipped.",
    ),
    s("natter_webhook_duration_seconds", Histogram, "", "Webhook delivery attempts, request to answer."),
    s(
        "natter_webhook_outbox",
        Gauge,
        "status",
        "Outbox rows, by status (cluster-wide; every node reports the same figure).",
    ),
    // Push notifications.
    s("natter_push_jobs_total", Counter, "", "Push jobs written with stored messages (gathered messages count once)."),
    s(
        "natter_push_deliveries_total",
        Counter,
        "platform,result",
        "Push jobs handled, by platform and result: delivered, webhook, retry, dead, gone, online, not_readable, no_sender, device_removed.",
    ),
    s(
        "natter_push_duration_seconds",
        Histogram,
        "platform",
        "Push requests to providers, request to answer, by platform.",
    ),
    s(
        "natter_push_outbox",
        Gauge,
        "status",
        "Push jobs, by status: pending, sending, dead (cluster-wide; every node reports the same figure).",
    ),
    s(
        "natter_push_devices_registered_total",
        Counter,
        "platform",
        "Device registrations (new or renewed), by platform.",
    ),
    s(
        "natter_push_devices_removed_total",
        Counter,
        "reason",
        "Devices removed because their provider called them gone (reason: gone).",
    ),
    s("natter_hook_duration_seconds", Histogram, "", "Before-send hook calls, request to answer."),
    s(
        "natter_hook_verdicts_total",
        Counter,
        "verdict",
        "Before-send verdicts other than allow: reject, modify, drop, unavailable_open, unavailable_closed.",
    ),
    // Build.
    s("natter_build_info", Gauge, "version", "1, labelled with the running version."),
];

/// Describes every series to the installed recorder (the `# HELP` and `# TYPE` lines).
pub fn describe() {
    for series in SERIES {
        match series.kind {
            Kind::Counter => metrics::describe_counter!(series.name, series.help),
            Kind::Gauge => metrics::describe_gauge!(series.name, series.help),
            Kind::Histogram => metrics::describe_histogram!(series.name, series.help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The series names docs/metrics.md lists in its tables.
    fn documented() -> BTreeSet<String> {
        include_str!("../../docs/metrics.md")
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .filter(|n| n.starts_with("natter_"))
            .map(str::to_string)
            .collect()
    }

    /// Every `"natter_…"` string literal under src/: the series the code records.
    fn recorded() -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        let mut dirs = vec![std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/src"))];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("series.rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for piece in text.split("\"natter_").skip(1) {
                        let name: String = piece.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                        if piece[name.len()..].starts_with('"') {
                            found.insert(format!("natter_{name}"));
                        }
                    }
                }
            }
        }
        found
    }

    #[test]
    fn the_catalog_the_code_and_docs_metrics_md_name_the_same_series() {
        let catalog: BTreeSet<String> = SERIES.iter().chain(PROCESS).map(|s| s.name.to_string()).collect();
        assert_eq!(catalog.len(), SERIES.len() + PROCESS.len(), "a series is listed twice");
        let docs = documented();
        let missing_in_docs: Vec<_> = catalog.difference(&docs).collect();
        let unknown_in_docs: Vec<_> = docs.difference(&catalog).collect();
        assert!(missing_in_docs.is_empty(), "docs/metrics.md lacks {missing_in_docs:?}");
        assert!(unknown_in_docs.is_empty(), "docs/metrics.md lists series Natter does not export: {unknown_in_docs:?}");
        let own: BTreeSet<String> = SERIES.iter().map(|s| s.name.to_string()).collect();
        let code = recorded();
        let uncatalogued: Vec<_> = code.difference(&own).collect();
        let unrecorded: Vec<_> = own.difference(&code).collect();
        assert!(uncatalogued.is_empty(), "recorded but not in the catalog: {uncatalogued:?}");
        assert!(unrecorded.is_empty(), "in the catalog but never recorded: {unrecorded:?}");
    }

    #[test]
    fn counters_end_in_total_and_durations_are_seconds() {
        for s in SERIES.iter().chain(PROCESS) {
            assert_eq!(s.kind == Kind::Counter, s.name.ends_with("_total"), "{}", s.name);
            if s.name.contains("duration") {
                assert!(s.name.ends_with("_seconds"), "{}", s.name);
            }
            assert!(!s.help.is_empty());
        }
    }
}
