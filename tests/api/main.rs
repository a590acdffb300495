//! The single-node API tests, in one binary: one link instead of eleven (each test binary links
//! the whole server and its dependencies again), and tests of every area run side by side.
//!
//! Kept out, each in a binary of its own: `metrics` (the metrics recorder is process-wide and it
//! asserts exact counts), `slow_reader` (it measures the process's memory growth), `cluster` and
//! `container` (they spawn `natter` processes), `architecture` (it reads the source, not a node).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod app_server_guide;
mod bad_input;
mod client_js;
mod console;
mod delivery;
mod group_admin;
mod hardening;
mod hostile;
mod lifecycle;
mod moderation;
mod openapi;
mod presence_store;
mod push_devices;
mod rongcloud;
mod server_api;
mod single_node;
mod tencent;
mod transport;
mod usersig;
mod webhooks;
