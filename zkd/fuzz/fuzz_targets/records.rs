//! Every client record decoder on arbitrary bytes: no panic, and whatever
//! decodes re-encodes to bytes that decode to the same record.
#![no_main]
use libfuzzer_sys::fuzz_target;
use zk_proto::frame::check_len;
use zk_proto::records::*;

fn round<T: Record + PartialEq + std::fmt::Debug>(b: &[u8]) {
    if let Ok(r) = T::decode(b) {
        let again = T::decode(&r.encode()).expect("re-encoded record decodes");
        assert_eq!(r, again);
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() >= 4 {
        let _ = check_len([data[0], data[1], data[2], data[3]], 0xfffff);
    }
    round::<ConnectRequest>(data);
    round::<ConnectResponse>(data);
    round::<RequestHeader>(data);
    round::<ReplyHeader>(data);
    round::<CreateRequest>(data);
    round::<CreateTtlRequest>(data);
    round::<DeleteRequest>(data);
    round::<PathWatch>(data);
    round::<SetDataRequest>(data);
    round::<SetAclRequest>(data);
    round::<GetAclResponse>(data);
    round::<SetWatches>(data);
    round::<SetWatches2>(data);
    round::<AuthPacket>(data);
    round::<WatcherEvent>(data);
    round::<MultiRequest>(data);
    round::<MultiResponse>(data);
    round::<GetDataResponse>(data);
    round::<GetChildren2Response>(data);
});
