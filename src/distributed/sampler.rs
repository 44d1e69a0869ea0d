//! The distributed sampler: which samples of an epoch each rank reads.

use crate::error::{config_err, Result};

/// Rank `rank`'s share of an epoch's order, PyTorch's `DistributedSampler(drop_last=True)`
/// convention: `epoch[rank]`, `epoch[rank + world]`, `epoch[rank + 2 world]`, … over the first
/// `world · ⌊N / world⌋` entries. Every rank gets the same number of samples, so all ranks take
/// the same number of steps (a rank with one step more would wait forever in its collective).
///
/// Every rank must pass the same `epoch` (the single-process order, drawn from the same seed and
/// epoch number on every rank). Then:
/// - the shards are disjoint and their union is `epoch` less its last `N mod world` entries;
/// - cut into batches of `B`, step `s` of all ranks together reads exactly
///   `epoch[s·world·B .. (s+1)·world·B]`, the batch a single process with batch `world·B` reads
///   at step `s`; gathered in rank order (`Dist::all_gather`) the rows are that batch in the
///   order `[epoch[s·W·B + r + W·j] for r in ranks for j in 0..B]` (rank-major, not the
///   single process's order). A single process that drops its last partial batch of `world·B`
///   runs the same complete steps.
///
/// # Errors
/// `world` is 0 or `rank >= world`.
///
/// # Example
/// ```
/// use selfsup::distributed::shard_indices;
/// let epoch = [7, 3, 9, 1, 4, 8, 2]; // 7 samples, 2 ranks: the last one is left out
/// assert_eq!(shard_indices(&epoch, 0, 2)?, vec![7, 9, 4]);
/// assert_eq!(shard_indices(&epoch, 1, 2)?, vec![3, 1, 8]);
/// # Ok::<(), selfsup::Error>(())
/// ```
pub fn shard_indices<T: Copy>(epoch: &[T], rank: usize, world: usize) -> Result<Vec<T>> {
    if world == 0 {
        return Err(config_err!("shard_indices: world size must be at least 1, got 0"));
    }
    if rank >= world {
        return Err(config_err!("shard_indices: rank {rank} out of range for world size {world} (ranks are 0..{world})"));
    }
    let used = epoch.len() / world * world;
    Ok(epoch[..used].iter().skip(rank).step_by(world).copied().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_is_the_epoch_less_its_tail() {
        let epoch: Vec<usize> = (0..11).rev().collect();
        let shards: Vec<Vec<usize>> = (0..3).map(|r| shard_indices(&epoch, r, 3).unwrap()).collect();
        assert!(shards.iter().all(|s| s.len() == 3));
        let mut union: Vec<usize> = shards.concat();
        union.sort();
        let mut expected = epoch[..9].to_vec();
        expected.sort();
        assert_eq!(union, expected);
    }

    #[test]
    fn rejects_a_rank_outside_the_world() {
        assert!(shard_indices(&[1, 2], 2, 2).is_err());
        assert!(shard_indices(&[1, 2], 0, 0).is_err());
    }
}
