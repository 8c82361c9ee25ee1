//! Device SDK for smart plugs (no_std). Work in progress: see issue 4.
#![no_std]
