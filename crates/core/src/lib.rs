//! tollgate-core: the domain of Tollgate, pure.
//!
//! Owns the rules: what a valid event is, when two events are the same event, how a meter turns
//! events into numbers, and how those numbers are cut into time windows. Owns no IO, no async,
//! no clock reads: time comes in as a [`time::UnixMs`] argument, storage stays outside. Modules
//! appear in pipeline order: [`event`] → [`dedup`] → [`meter`] → [`usage`] → [`money`] →
//! [`pricing`] → [`billing`] → [`invoice`] → [`ledger`] → [`entitlement`] ([`sessions`]) →
//! [`alert`] → [`webhook`]; [`ipmeta`] says who held an address, [`accesslog`] reads proxy
//! logs, [`inspect`] decides on destinations.

pub mod accesslog;
pub mod alert;
pub mod billing;
pub mod credit_note;
pub mod dedup;
pub mod entitlement;
pub mod event;
pub mod inspect;
pub mod invoice;
pub mod ipmeta;
pub mod ledger;
pub mod limits;
pub mod meter;
pub mod money;
pub mod pricing;
pub mod provider;
pub mod reconcile;
pub mod refund;
pub mod sessions;
pub mod time;
pub mod usage;
pub mod webhook;
