#![no_std]
// This file exists to give the crate a library target (aya-template layout).
