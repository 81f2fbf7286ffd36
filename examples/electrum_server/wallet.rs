//! A deterministic single-key P2WPKH wallet.
//!
//! The regtest chain uses a [`TestKey`] to receive its coinbases and to sign the
//! `--pay-to` payments; tests use their own keys to sign spends of the outputs
//! they were paid. The module only depends on the `bitcoin` crate, so a test can
//! include it on its own with `#[path = "…/wallet.rs"] mod wallet;`.

use std::fmt;

use bitcoin::absolute::LockTime;
use bitcoin::consensus::serialize;
use bitcoin::ecdsa;
use bitcoin::hashes::{Hash, sha256};
use bitcoin::secp256k1::{All, Message, Secp256k1, SecretKey};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::transaction::Version;
use bitcoin::{
    Address, Amount, CompressedPublicKey, KnownHrp, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut,
    Txid, Witness,
};

/// One secp256k1 key, derived from a 32-byte seed, spending and receiving as
/// native segwit v0 key hash (P2WPKH) on regtest.
///
/// The same seed always gives the same key, so chains and tests are reproducible.
/// Signatures are RFC 6979 deterministic with low R, so signed transactions are
/// reproducible too.
#[derive(Clone)]
pub struct TestKey {
    secp: Secp256k1<All>,
    secret: SecretKey,
    public: CompressedPublicKey,
}

impl TestKey {
    /// Derives the key from `seed`: the secret is `sha256(seed)`, re-hashed in the
    /// (astronomically unlikely) case it is not a valid secp256k1 scalar.
    pub fn from_seed(seed: [u8; 32]) -> TestKey {
        let mut digest = sha256::Hash::hash(&seed).to_byte_array();
        let secret = loop {
            match SecretKey::from_slice(&digest) {
                Ok(secret) => break secret,
                Err(_) => digest = sha256::Hash::hash(&digest).to_byte_array(),
            }
        };
        let secp = Secp256k1::new();
        let public = CompressedPublicKey(secret.public_key(&secp));
        TestKey { secp, secret, public }
    }

    /// The key's regtest P2WPKH address (`bcrt1q…`).
    pub fn address(&self) -> String {
        Address::p2wpkh(&self.public, KnownHrp::Regtest).to_string()
    }

    /// The key's P2WPKH output script (`OP_0 <20-byte key hash>`).
    pub fn script_pubkey(&self) -> Vec<u8> {
        self.script().into_bytes()
    }

    /// Electrum scripthash of [`TestKey::script_pubkey`]: `sha256(script)` in
    /// internal byte order (Electrum's hex form is this reversed).
    pub fn scripthash(&self) -> [u8; 32] {
        sha256::Hash::hash(self.script().as_bytes()).to_byte_array()
    }

    /// Builds and signs a version 2 transaction spending P2WPKH outputs of this key.
    ///
    /// `inputs` are `(txid in internal byte order, vout, value in sats)` of the
    /// outputs being spent (the value is committed to by the BIP143 sighash);
    /// `outputs` are `(script_pubkey, value in sats)`. Every input is signed with
    /// `SIGHASH_ALL`; lock time 0, sequence `0xffffffff`. Returns the raw segwit
    /// serialisation, ready for `accept_transaction` or `blockchain.transaction.broadcast`.
    ///
    /// Nothing is checked: spending outputs that do not belong to this key, or
    /// paying more than the inputs hold, gives a transaction the chain refuses.
    pub fn sign_p2wpkh_spend(&self, inputs: &[([u8; 32], u32, u64)], outputs: &[(Vec<u8>, u64)]) -> Vec<u8> {
        let mut tx = Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: inputs
                .iter()
                .map(|&(txid, vout, _)| TxIn {
                    previous_output: OutPoint::new(Txid::from_byte_array(txid), vout),
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence::MAX,
                    witness: Witness::new(),
                })
                .collect(),
            output: outputs
                .iter()
                .map(|(script, value)| TxOut {
                    value: Amount::from_sat(*value),
                    script_pubkey: ScriptBuf::from_bytes(script.clone()),
                })
                .collect(),
        };
        let script = self.script();
        let mut cache = SighashCache::new(&mut tx);
        for (index, &(_, _, value)) in inputs.iter().enumerate() {
            let sighash = cache
                .p2wpkh_signature_hash(index, &script, Amount::from_sat(value), EcdsaSighashType::All)
                .expect("the input exists and the script is P2WPKH");
            let message = Message::from_digest(sighash.to_byte_array());
            let signature = ecdsa::Signature::sighash_all(self.secp.sign_ecdsa_low_r(&message, &self.secret));
            *cache.witness_mut(index).expect("the input exists") =
                Witness::p2wpkh(&signature, &self.public.0);
        }
        serialize(&tx)
    }

    fn script(&self) -> ScriptBuf {
        ScriptBuf::new_p2wpkh(&self.public.wpubkey_hash())
    }
}

impl fmt::Debug for TestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestKey")
            .field("address", &self.address())
            .finish_non_exhaustive()
    }
}
