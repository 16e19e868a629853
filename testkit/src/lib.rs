//! What the tests, the demo and the benchmarks share, kept out of the product crates:
//! [`ward`], a gateway between a device VLAN and the hospital side built of network namespaces
//! and veth pairs, with small TCP/UDP peers; [`controller`], an in-process controller on a
//! temporary store with lab certificates and clients for each role; [`peers`], real DICOM,
//! HL7, DNS and NTP servers and clients in those namespaces; [`postgres`], a real PostgreSQL
//! server of the test process's own.

pub mod agent;
pub mod controller;
pub mod demo;
pub mod flows;
pub mod ocsf;
pub mod peers;
pub mod postgres;
pub mod prometheus;
pub mod relay;
pub mod stats;
pub mod switched;
pub mod ward;
