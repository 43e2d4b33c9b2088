use super::{AuxWrite, RegistryStore, StoreError, VersionDelta, validate_delta};
use std::collections::BTreeMap;
use types::RegistryVersion;

/// The registry in memory: for tests, the simulator and caches.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    history: BTreeMap<String, BTreeMap<RegistryVersion, Option<Vec<u8>>>>,
    changelog: Vec<VersionDelta>,
    aux: BTreeMap<String, Vec<u8>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl RegistryStore for MemoryStore {
    fn latest_version(&self) -> RegistryVersion {
        RegistryVersion::new(self.changelog.len() as u64)
    }

    fn get_versioned(
        &self,
        key: &str,
        version: RegistryVersion,
    ) -> Result<Option<(RegistryVersion, Vec<u8>)>, StoreError> {
        super::check_available(version, self.latest_version())?;
        Ok(self
            .history
            .get(key)
            .and_then(|h| h.range(..=version).next_back())
            .and_then(|(v, value)| value.clone().map(|value| (*v, value))))
    }

    fn changes_since(
        &self,
        version: RegistryVersion,
        max_versions: usize,
    ) -> Result<Vec<VersionDelta>, StoreError> {
        let start = (version.get() as usize).min(self.changelog.len());
        let end = start.saturating_add(max_versions).min(self.changelog.len());
        Ok(self.changelog[start..end].to_vec())
    }

    fn latest_snapshot(&self) -> Result<BTreeMap<String, Vec<u8>>, StoreError> {
        Ok(self
            .history
            .iter()
            .filter_map(|(k, h)| {
                h.values()
                    .next_back()
                    .cloned()
                    .flatten()
                    .map(|v| (k.clone(), v))
            })
            .collect())
    }

    fn commit(&mut self, delta: Option<&VersionDelta>, aux: &[AuxWrite]) -> Result<(), StoreError> {
        if let Some(delta) = delta {
            validate_delta(delta, self.latest_version())?;
            for c in &delta.changes {
                self.history
                    .entry(c.key.clone())
                    .or_default()
                    .insert(delta.version, c.value.clone());
            }
            self.changelog.push(delta.clone());
        }
        for (k, v) in aux {
            match v {
                Some(v) => self.aux.insert(k.clone(), v.clone()),
                None => self.aux.remove(k),
            };
        }
        Ok(())
    }

    fn aux_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.aux.get(key).cloned())
    }

    fn aux_scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(self
            .aux
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}
