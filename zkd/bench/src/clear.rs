//! `--workload clear`: removes `--prefix` and everything under it, the
//! requests pipelined over `--conns` connections, `--depth` in flight on
//! each. `scripts/bench.sh` clears each run's znodes once the run is
//! measured, so every row starts on the tree the servers were started
//! with. Left in place, the znodes of the create rows stayed in the tree
//! for the rows after them, and the faster server kept more of them: a
//! fresh zkd ensemble ran multi10 16x32 100 B at 16.4k ops/s, and at
//! 12.9k after two 5 s create 16x32 runs had added ~450,000 znodes
//! (`perf`: the tree's B-tree lookups missing the cache), while
//! ZooKeeper had added a fifth as many.
//!
//! Deletes go first and listing only where needed: a delete refused with
//! NOTEMPTY has its node's children listed, removed the same way, and is
//! sent again. The leaves zkbench makes are then never listed.

use zk_proto::jute::Reader;
use zk_proto::records::{DeleteRequest, GetChildrenResponse, PathWatch, Record, ReplyHeader};
use zk_proto::{ErrorCode, OpCode};

use crate::Conn;

const NO_NODE: i32 = ErrorCode::NO_NODE.0;
const NOT_EMPTY: i32 = ErrorCode::NOT_EMPTY.0;

/// How deep a tree `clear` goes before it gives up (zkbench's own are 3
/// levels under the prefix at most).
const MAX_DEPTH: usize = 32;

/// Tries to delete a znode that has children (see `remove`).
const ROUNDS: usize = 4;

/// Each request's reply, in the order of `reqs`: its error code and body.
async fn pipelined(
    conns: &mut Vec<Conn>,
    reqs: Vec<(i32, Vec<u8>)>,
    depth: usize,
) -> std::io::Result<Vec<(i32, Vec<u8>)>> {
    let (n, total) = (conns.len(), reqs.len());
    let mut shares: Vec<Vec<(usize, i32, Vec<u8>)>> = (0..n).map(|_| Vec::new()).collect();
    for (i, (op, body)) in reqs.into_iter().enumerate() {
        shares[i % n].push((i, op, body));
    }
    let tasks: Vec<_> = conns
        .drain(..)
        .zip(shares)
        .map(|(mut conn, share)| {
            tokio::spawn(async move {
                let mut out = Vec::with_capacity(share.len());
                let mut sent = 0;
                while out.len() < share.len() {
                    let mut batch = Vec::new();
                    while sent < share.len() && sent - out.len() < depth.max(1) {
                        let (_, op, body) = &share[sent];
                        batch.extend_from_slice(&conn.request(*op, body));
                        sent += 1;
                    }
                    if !batch.is_empty() {
                        use tokio::io::AsyncWriteExt;
                        conn.wr.write_all(&batch).await?;
                    }
                    let b = conn.frame().await?;
                    let mut r = Reader::new(&b);
                    let h = ReplyHeader::read(&mut r)
                        .map_err(|e| std::io::Error::other(e.to_string()))?;
                    if h.xid < 0 {
                        continue;
                    }
                    out.push((share[out.len()].0, h.err, b[r.position()..].to_vec()));
                }
                Ok::<_, std::io::Error>((conn, out))
            })
        })
        .collect();
    let mut replies: Vec<Option<(i32, Vec<u8>)>> =
        std::iter::repeat_with(|| None).take(total).collect();
    for t in tasks {
        let (conn, out) = t.await.map_err(std::io::Error::other)??;
        conns.push(conn);
        for (i, err, body) in out {
            replies[i] = Some((err, body));
        }
    }
    Ok(replies
        .into_iter()
        .map(|r| r.expect("a reply for each request"))
        .collect())
}

/// Deletes `paths` and all under them; the znodes deleted.
async fn remove(
    conns: &mut Vec<Conn>,
    paths: Vec<String>,
    depth: usize,
    level: usize,
) -> std::io::Result<u64> {
    if paths.is_empty() {
        return Ok(0);
    }
    if level > MAX_DEPTH {
        return Err(std::io::Error::other(format!(
            "clear: a tree deeper than {MAX_DEPTH} levels under {}",
            paths[0]
        )));
    }
    let mut deleted = 0;
    let mut pending = paths;
    // A node with children is emptied, then deleted. A few rounds, not
    // two: on an ensemble a list served by a member that trails the
    // leader can miss the newest children, and the leader then refuses
    // the delete again.
    for _ in 0..ROUNDS {
        let reqs = (pending.iter())
            .map(|p| {
                let d = DeleteRequest {
                    path: p.clone(),
                    version: -1,
                };
                (OpCode::Delete as i32, d.encode())
            })
            .collect();
        let mut full = Vec::new();
        for (path, (err, _)) in pending
            .into_iter()
            .zip(pipelined(conns, reqs, depth).await?)
        {
            match err {
                0 => deleted += 1,
                NO_NODE => {}
                NOT_EMPTY => full.push(path),
                e => {
                    return Err(std::io::Error::other(format!(
                        "clear: delete {path} failed with error {e}"
                    )))
                }
            }
        }
        if full.is_empty() {
            return Ok(deleted);
        }
        let reqs = (full.iter())
            .map(|p| {
                let l = PathWatch {
                    path: p.clone(),
                    watch: false,
                };
                (OpCode::GetChildren as i32, l.encode())
            })
            .collect();
        let mut children = Vec::new();
        for (path, (err, body)) in full.iter().zip(pipelined(conns, reqs, depth).await?) {
            if err == NO_NODE {
                continue;
            }
            if err != 0 {
                return Err(std::io::Error::other(format!(
                    "clear: listing {path} failed with error {err}"
                )));
            }
            let r = GetChildrenResponse::read(&mut Reader::new(&body))
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let base = if path == "/" { "" } else { path.as_str() };
            children.extend(r.children.into_iter().map(|c| format!("{base}/{c}")));
        }
        deleted += Box::pin(remove(conns, children, depth, level + 1)).await?;
        pending = full;
    }
    Err(std::io::Error::other(format!(
        "clear: {} still has children (another client is creating under it?)",
        pending[0]
    )))
}

/// Removes `prefix` and its subtree; prints the run's JSON line.
pub async fn run(prefix: &str, mut conns: Vec<Conn>, depth: usize) -> std::io::Result<()> {
    let start = std::time::Instant::now();
    let deleted = remove(&mut conns, vec![prefix.to_owned()], depth, 0).await?;
    println!(
        "{{\"workload\":\"clear\",\"deleted\":{deleted},\"secs\":{:.3}}}",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
