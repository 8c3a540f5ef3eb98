//! Shared by the `security_*` tests.
#![allow(dead_code)]

pub mod support;
