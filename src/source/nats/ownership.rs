//! Which live replica owns which NATS account, when several replicas share one Postgres store:
//! rendezvous (highest random weight) hashing. Every replica computes the same owner from the
//! same list of live replicas, without talking to the others; when a replica joins or leaves,
//! only the accounts it gains or held move, about `accounts / replicas` of them.
//!
//! The score is SHA-256 over the account and the replica id, so replicas built by different
//! compiler versions (a rolling upgrade) still agree.

use sha2::{Digest, Sha256};

/// The replica that should own `account` among `replicas` (live replica ids, any order), or
/// `None` when no replica is live.
pub fn owner_of<'r>(account: &str, replicas: &'r [String]) -> Option<&'r str> {
    replicas
        .iter()
        .map(|replica| (score(account, replica), replica.as_str()))
        // Equal scores (never seen with SHA-256, but possible) go to the smaller id.
        .max_by(|(a, a_id), (b, b_id)| a.cmp(b).then_with(|| b_id.cmp(a_id)))
        .map(|(_, replica)| replica)
}

/// The accounts among `accounts` that `me` should own among `replicas`.
pub fn share_of<'a>(
    me: &str,
    accounts: impl IntoIterator<Item = &'a str>,
    replicas: &[String],
) -> Vec<&'a str> {
    accounts
        .into_iter()
        .filter(|account| owner_of(account, replicas) == Some(me))
        .collect()
}

fn score(account: &str, replica: &str) -> u64 {
    let mut hash = Sha256::new();
    // Both lengths go in, so ("ab", "c") and ("a", "bc") score differently.
    hash.update((account.len() as u64).to_be_bytes());
    hash.update(account.as_bytes());
    hash.update((replica.len() as u64).to_be_bytes());
    hash.update(replica.as_bytes());
    let digest = hash.finalize();
    u64::from_be_bytes(
        digest[..8]
            .try_into()
            .expect("a SHA-256 digest has 32 bytes"),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn accounts(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("tenant-{i}")).collect()
    }

    fn owners(accounts: &[String], replicas: &[String]) -> HashMap<String, String> {
        accounts
            .iter()
            .map(|a| (a.clone(), owner_of(a, replicas).unwrap().to_string()))
            .collect()
    }

    #[test]
    fn no_live_replica_owns_nothing() {
        assert_eq!(owner_of("acme", &[]), None);
    }

    #[test]
    fn every_replica_agrees_whatever_order_it_lists_the_others_in() {
        let forward = ids(&["r-a", "r-b", "r-c"]);
        let backward = ids(&["r-c", "r-b", "r-a"]);
        let all = accounts(200);
        assert_eq!(owners(&all, &forward), owners(&all, &backward));
    }

    /// 1,000 accounts over 3 replicas: each gets a third, within a few percent.
    #[test]
    fn accounts_spread_evenly() {
        let replicas = ids(&["r-a", "r-b", "r-c"]);
        let all = accounts(1_000);
        for me in &replicas {
            let mine = share_of(me, all.iter().map(String::as_str), &replicas).len();
            assert!((283..=383).contains(&mine), "{me} owns {mine} of 1,000");
        }
    }

    /// A fourth replica takes about a quarter of the accounts, each from its old owner, and
    /// no account moves between the three that stay.
    #[test]
    fn a_joining_replica_takes_only_its_share() {
        let three = ids(&["r-a", "r-b", "r-c"]);
        let four = ids(&["r-a", "r-b", "r-c", "r-d"]);
        let all = accounts(1_000);
        let before = owners(&all, &three);
        let after = owners(&all, &four);
        let moved: Vec<&String> = all.iter().filter(|a| before[*a] != after[*a]).collect();
        assert!(moved.iter().all(|a| after[*a] == "r-d"), "only to r-d");
        assert!((200..=300).contains(&moved.len()), "{} moved", moved.len());
    }

    /// When a replica dies, only its accounts move, spread over the others.
    #[test]
    fn a_leaving_replica_hands_on_only_its_own_accounts() {
        let three = ids(&["r-a", "r-b", "r-c"]);
        let two = ids(&["r-a", "r-c"]);
        let all = accounts(1_000);
        let before = owners(&all, &three);
        let after = owners(&all, &two);
        for account in &all {
            if before[account] != "r-b" {
                assert_eq!(before[account], after[account], "{account} moved");
            }
        }
        let from_b: Vec<&String> = all.iter().filter(|a| before[*a] == "r-b").collect();
        let to_a = from_b.iter().filter(|a| after[**a] == "r-a").count();
        assert!(
            to_a > from_b.len() / 4 && to_a < from_b.len() * 3 / 4,
            "{to_a} of {} went to r-a",
            from_b.len()
        );
    }
}
