//! `celltrail migrate`: copies a log from one store to another (sled ⇄ PostgreSQL) and proves
//! that the copy has the same root under the same signed checkpoint.
//!
//! The copy carries each entry's exact bytes and the source's signed checkpoint unchanged;
//! everything else (chain indexes, bag index, Merkle nodes) is rebuilt from the entries, and
//! the chain heads (with their open holds) and chain summaries are copied from the source. At the end the root recomputed from the copy's
//! nodes must equal the root in the source's checkpoint (whose signature is checked with the
//! log key), and the copy's checkpoint must be that very note.

use crate::crypto::EventHash;
use crate::note::{Checkpoint, NoteVerifier};
use crate::pb::{EventBody, LogEntry};
use crate::storage::{Group, NewEntry, Storage};
use anyhow::{bail, Context};
use prost::Message;
use std::collections::{HashMap, HashSet};

/// Entries per group written to the target.
const PAGE: usize = 1024;

/// What a migration proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    pub tree_size: u64,
    pub chains: usize,
    pub root: [u8; 32],
}

/// Copies everything of `from` into the empty `to`, then checks the copy's root against the
/// checkpoint, which must be signed by `log_key`.
pub fn migrate(
    from: &dyn Storage,
    to: &dyn Storage,
    log_key: &NoteVerifier,
) -> anyhow::Result<Migrated> {
    if to.tree_size()? != 0 {
        bail!(
            "the target already holds a log ({} entries): migrate only into an empty store",
            to.tree_size()?
        );
    }
    let cut = from.cut()?;
    let size = cut.tree_size;
    let checkpoint = match (&cut.checkpoint, size) {
        (_, 0) => None,
        (Some(note), _) => {
            let opened =
                crate::note::open_note(note, std::slice::from_ref(log_key)).map_err(|e| {
                    anyhow::anyhow!(
                        "the source's checkpoint is not signed by the log key given: {e}"
                    )
                })?;
            let cp = Checkpoint::parse(&opened.text)
                .map_err(|e| anyhow::anyhow!("the source's checkpoint does not parse: {e}"))?;
            if cp.size != size {
                bail!(
                    "the source's checkpoint is for {} entries but it holds {size}",
                    cp.size
                );
            }
            Some((note.clone(), cp))
        }
        (None, _) => bail!("the source holds {size} entries but no signed checkpoint"),
    };
    // Nodes completed so far that a later append may still need (the right edge).
    let mut nodes: HashMap<(u32, u64), [u8; 32]> = HashMap::new();
    let mut bags_seen: HashSet<(String, String)> = HashSet::new();
    let mut next = 0u64;
    while next < size {
        let page = from.entries_from(next, PAGE.min((size - next) as usize))?;
        if page.is_empty() {
            bail!("the source lacks entry {next} of {size}");
        }
        let mut g = Group::default();
        for (index, bytes) in page {
            if index != next {
                bail!("the source lacks entry {next} (found {index})");
            }
            let entry = LogEntry::decode(bytes.as_slice())
                .with_context(|| format!("entry {index} does not decode"))?;
            let body = EventBody::decode(entry.body.as_slice())
                .with_context(|| format!("entry {index}'s body does not decode"))?;
            let leaf = crate::merkle::leaf_hash(&bytes);
            let completed = crate::merkle::nodes_completed_by_append(index, leaf, |l, i| {
                nodes.get(&(l, i)).copied().ok_or(())
            })
            .map_err(|()| {
                anyhow::anyhow!("internal: a Merkle node below entry {index} is missing")
            })?;
            for (id, h) in &completed {
                nodes.insert(*id, *h);
            }
            g.nodes.extend(completed);
            for bag in crate::rules::bags_named(&body) {
                if bags_seen.insert((bag.to_string(), body.chain_id.clone())) {
                    g.bags.push((bag.to_string(), body.chain_id.clone(), index));
                }
            }
            g.entries.push(NewEntry {
                index,
                event_hash: EventHash::of_body(&entry.body),
                chain_id: body.chain_id.clone(),
                seq: body.seq,
                bytes,
            });
            next += 1;
        }
        g.tree_size = next;
        prune(&mut nodes, next);
        to.commit(&g)?;
    }
    // Heads (with their open holds) and the console's chain summaries as the source has them,
    // and its signed checkpoint, in the last group.
    let chains = from.chain_ids()?;
    let mut last = Group {
        tree_size: size,
        checkpoint: checkpoint.as_ref().map(|(note, _)| note.clone()),
        ..Default::default()
    };
    for id in &chains {
        let head = from
            .head(id)?
            .with_context(|| format!("the source lists chain {id} but has no head for it"))?;
        last.heads.push((id.clone(), head));
        if let Some(summary) = from.chain_summary(id)? {
            last.summaries.push((id.clone(), summary));
        }
    }
    to.commit(&last)?;
    // The proof: the copy's root, from its own nodes, is the signed checkpoint's root.
    let root = crate::merkle::root_at(size, |l, i| {
        to.node(l, i)?.ok_or_else(|| {
            crate::storage::StorageError::Corrupt(format!("the copy lacks Merkle node ({l},{i})"))
        })
    })?;
    if let Some((_, cp)) = &checkpoint {
        if cp.root != root {
            bail!(
                "the copy's root {} differs from the signed checkpoint's root {}",
                hex::encode(root),
                hex::encode(cp.root)
            );
        }
    }
    if to.checkpoint()? != cut.checkpoint {
        bail!("the copy's checkpoint differs from the source's");
    }
    Ok(Migrated {
        tree_size: size,
        chains: chains.len(),
        root,
    })
}

/// Drops nodes that no later append can need: a completed subtree is needed only while it is a
/// left sibling on the right edge, i.e. while its right neighbour is not complete.
fn prune(nodes: &mut HashMap<(u32, u64), [u8; 32]>, size: u64) {
    nodes.retain(|(level, index), _| {
        let width = 1u64 << level;
        // needed if it is a left child (even index) whose parent is not complete yet
        index % 2 == 0 && (index + 2) * width > size
    });
}

/// `celltrail migrate` flags.
#[derive(clap::Args, Debug)]
pub struct MigrateArgs {
    /// Source: a data directory (its server stopped) or a database URL postgres://…
    #[arg(long, env = "CELLTRAIL_MIGRATE_FROM")]
    pub from: String,
    /// Target: a new or empty data directory, or a database URL postgres://… whose celltrail
    /// log is empty (the servers on it stopped).
    #[arg(long, env = "CELLTRAIL_MIGRATE_TO")]
    pub to: String,
    /// The log's verifier key (a key string or a file, e.g. log.vkey): the checkpoint copied
    /// must be signed by it [default: FROM/log.vkey for a data directory].
    #[arg(long, env = "CELLTRAIL_LOG_VKEY", allow_hyphen_values = true)]
    pub log_key: Option<String>,
}

fn open_source(from: &str) -> anyhow::Result<std::sync::Arc<dyn Storage>> {
    if crate::pg::is_postgres_url(from) {
        return Ok(std::sync::Arc::new(crate::pg::PgStore::open_for_audit(
            from,
        )?));
    }
    let dir = crate::datadir::DataDir::new(from);
    if !dir.db().exists() {
        bail!(
            "{from} is not a data directory (no {}) and not a postgres:// URL",
            dir.db().display()
        );
    }
    Ok(std::sync::Arc::new(
        crate::store::Store::open_for_audit(&dir.db())
            .context("stop the server on the source data directory first")?,
    ))
}

/// A PostgreSQL target and the epoch of the writer lease `migrate` holds while copying.
type HeldLease = (std::sync::Arc<crate::pg::PgStore>, u64);

/// The target store, and for PostgreSQL the writer lease it holds while copying.
fn open_target(to: &str) -> anyhow::Result<(std::sync::Arc<dyn Storage>, Option<HeldLease>)> {
    if crate::pg::is_postgres_url(to) {
        let role = std::sync::Arc::new(crate::role::Role::standby());
        let store = std::sync::Arc::new(crate::pg::PgStore::open(
            to,
            Some(role.clone()),
            &Default::default(),
        )?);
        let holder = format!("celltrail migrate {}", crate::pg::lease::holder_name());
        let Some(epoch) = store.try_acquire_lease(
            &holder,
            "migrate (no server)",
            std::time::Duration::from_secs(3600),
        )?
        else {
            bail!(
                "a server holds the writer lease of {}: stop every server on that database first",
                crate::pg::redact_url(to)
            );
        };
        role.become_writer(epoch, "migrate (no server)");
        return Ok((store.clone(), Some((store, epoch))));
    }
    let dir = crate::datadir::DataDir::new(to);
    std::fs::create_dir_all(dir.root()).with_context(|| format!("cannot create {to}"))?;
    Ok((
        std::sync::Arc::new(crate::store::Store::open(&dir.db())?),
        None,
    ))
}

/// Runs `celltrail migrate`.
pub fn run(a: MigrateArgs) -> anyhow::Result<()> {
    let log_key = match &a.log_key {
        Some(k) => crate::keys::verifier_key_arg("--log-key", k)?,
        None if !crate::pg::is_postgres_url(&a.from) => {
            crate::keys::read_verifier_key_file(&crate::datadir::DataDir::new(&a.from).log_vkey())?
        }
        None => bail!("--log-key is required when migrating from a database (the log's verifier key, log.vkey)"),
    };
    let from = open_source(&a.from)?;
    let (to, lease) = open_target(&a.to)?;
    let result = migrate(from.as_ref(), to.as_ref(), &log_key);
    if let Some((store, epoch)) = lease {
        let _ = store.release_lease(epoch);
    }
    let m = result?;
    println!(
        "migrated {} entries of {} chains from {} to {}: the copy's root {} equals the root of the same signed checkpoint (size {})",
        m.tree_size,
        m.chains,
        shown(&a.from),
        shown(&a.to),
        hex::encode(m.root),
        m.tree_size
    );
    Ok(())
}

fn shown(s: &str) -> String {
    if crate::pg::is_postgres_url(s) {
        crate::pg::redact_url(s)
    } else {
        s.to_string()
    }
}
