#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| twinhub::fuzzing::server_traffic(data));
