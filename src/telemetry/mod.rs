//! Logging (tracing; pretty or JSON) and the Prometheus recorder behind `/metrics`, with the
//! catalog of every series it exports (`series`).

pub mod series;

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogConfig, LogFormat};

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();
static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();
static HOT: OnceLock<Hot> = OnceLock::new();

/// Counters bumped once per frame a session writes, with their handles taken once: the
/// `counter!` macro hashes the name and locks a registry shard on every call, 1.5 % of a node's
/// CPU in a profile of a 1,000-member group at 100 msg/s (two calls per delivery).
struct Hot {
    delivered: metrics::Counter,
    frames_sent: metrics::Counter,
}

/// One message pushed to a session: `natter_messages_delivered_total` and the frame.
pub fn count_delivery() {
    match HOT.get() {
        Some(hot) => {
            hot.delivered.increment(1);
            hot.frames_sent.increment(1);
        }
        // Before the recorder is installed (a node built in a test without a server) the
        // macro reaches whatever recorder there is, as every other series does.
        None => {
            metrics::counter!("natter_messages_delivered_total").increment(1);
            metrics::counter!("natter_ws_frames_sent_total").increment(1);
        }
    }
}

/// One frame other than a pushed message written to a session.
pub fn count_frame_sent() {
    match HOT.get() {
        Some(hot) => hot.frames_sent.increment(1),
        None => metrics::counter!("natter_ws_frames_sent_total").increment(1),
    }
}

/// Latency buckets in seconds: sub-millisecond to 10 s.
const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Installs the process-wide metrics recorder once; later calls reuse it.
pub fn init_metrics() {
    PROMETHEUS.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        match builder.install_recorder() {
            Ok(handle) => handle,
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder already installed elsewhere");
                PrometheusBuilder::new().build_recorder().handle()
            }
        }
    });
    // Taken only once the recorder is in place: a handle taken before would count nowhere.
    HOT.get_or_init(|| Hot {
        delivered: metrics::counter!("natter_messages_delivered_total"),
        frames_sent: metrics::counter!("natter_ws_frames_sent_total"),
    });
    series::describe();
    PROCESS.get_or_init(|| metrics_process::Collector::new(series::PROCESS_PREFIX)).describe();
    metrics::gauge!("natter_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    // Failure counters exist from the start at 0, so rate() and alerts see a series before the
    // first failure instead of nothing.
    for kind in ["pool_timeout", "io", "database", "protocol", "other"] {
        metrics::counter!("natter_db_errors_total", "kind" => kind).increment(0);
    }
    for reason in ["error", "timeout"] {
        metrics::counter!("natter_bus_publish_errors_total", "reason" => reason).increment(0);
    }
    for connection in ["publisher", "subscriber"] {
        metrics::counter!("natter_bus_connection_errors_total", "connection" => connection).increment(0);
    }
    metrics::counter!("natter_bus_publish_dropped_total").increment(0);
    metrics::counter!("natter_ws_slow_consumer_drops_total").increment(0);
}

/// The Prometheus text exposition of every metric, the process's figures read at this scrape.
pub fn render_metrics() -> String {
    if let Some(collector) = PROCESS.get() {
        collector.collect();
    }
    PROMETHEUS.get().map(PrometheusHandle::render).unwrap_or_default()
}

/// Drops expired histogram samples and samples the process's CPU, memory, descriptors and
/// threads; on a timer.
pub fn metrics_upkeep() {
    if let Some(handle) = PROMETHEUS.get() {
        handle.run_upkeep();
    }
    if let Some(collector) = PROCESS.get() {
        collector.collect();
    }
}

/// Logs to stderr; `RUST_LOG` overrides `log.level`. Safe to call more than once.
pub fn init_logging(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.level));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match config.format {
        LogFormat::Json => {
            registry.with(fmt::layer().json().flatten_event(true).with_writer(std::io::stderr)).try_init()
        }
        LogFormat::Pretty => registry.with(fmt::layer().with_writer(std::io::stderr)).try_init(),
    };
}
