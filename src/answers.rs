//! [`Answers`]: where a host writes the answers of a batched call, one per
//! script, into buffers the manager keeps from one batch to the next.

use crate::error::HostError;

/// The answers of one batched host call ([`crate::Db::histories`],
/// [`crate::Mempool::entries_batch`]): one per script asked, in the order
/// asked, each a list of entries or an error.
///
/// The entries of every answer sit in one buffer, which the manager clears
/// and hands back for the next batch: a host answering from memory (or
/// decoding rows straight into it) allocates nothing per script, where a
/// `Vec` per script would cost an allocation and a free each time a status
/// is recomputed.
///
/// ```
/// use indexer_sessions::{Answers, Height, HistoryEntry, TxHash};
///
/// let mut answers = Answers::new();
/// answers.answer([HistoryEntry { txid: TxHash([1; 32]), height: Height(7) }]);
/// answers.fail("the index is unreachable".into());
/// answers.answer([]);
/// assert_eq!(answers.len(), 3);
/// assert_eq!(answers.get(0).unwrap().unwrap()[0].height, Height(7));
/// assert!(answers.get(1).unwrap().is_err());
/// assert_eq!(answers.get(2).unwrap().unwrap(), &[]);
/// assert!(answers.get(3).is_none());
/// ```
#[derive(Debug)]
pub struct Answers<T> {
    /// The entries of every answer, in order.
    entries: Vec<T>,
    /// Per answer: where its entries end in `entries` (a failed answer
    /// ends where the one before it ends).
    ends: Vec<usize>,
    /// The failed answers' positions and errors, by position.
    errors: Vec<(usize, HostError)>,
}

impl<T> Default for Answers<T> {
    fn default() -> Self {
        Answers {
            entries: Vec::new(),
            ends: Vec::new(),
            errors: Vec::new(),
        }
    }
}

impl<T> Answers<T> {
    /// No answers yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers the next script with `entries` (none for a script with
    /// nothing to report).
    pub fn answer(&mut self, entries: impl IntoIterator<Item = T>) {
        self.entries.extend(entries);
        self.ends.push(self.entries.len());
    }

    /// Answers the next script with an error: that script alone fails.
    pub fn fail(&mut self, error: HostError) {
        self.errors.push((self.ends.len(), error));
        self.ends.push(self.entries.len());
    }

    /// Answers the next script with `answer`, as [`Self::answer`] or
    /// [`Self::fail`].
    pub fn push(&mut self, answer: Result<impl IntoIterator<Item = T>, HostError>) {
        match answer {
            Ok(entries) => self.answer(entries),
            Err(error) => self.fail(error),
        }
    }

    /// How many scripts are answered.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether no script is answered.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The answer for the `index`th script, `None` past the last.
    pub fn get(&self, index: usize) -> Option<Result<&[T], &HostError>> {
        let end = *self.ends.get(index)?;
        match self.error_at(index) {
            Ok(at) => Some(Err(&self.errors[at].1)),
            Err(_) => Some(Ok(&self.entries[self.start_of(index)..end])),
        }
    }

    /// The answer for the `index`th script, its entries mutable and its
    /// error taken out (the answer is then empty); `None` past the last.
    pub(crate) fn take(&mut self, index: usize) -> Option<Result<&mut [T], HostError>> {
        let end = *self.ends.get(index)?;
        match self.error_at(index) {
            Ok(at) => Some(Err(self.errors.remove(at).1)),
            Err(_) => {
                let start = self.start_of(index);
                Some(Ok(&mut self.entries[start..end]))
            }
        }
    }

    /// Forgets every answer, keeping the buffers (the manager clears the
    /// answers before each call).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.ends.clear();
        self.errors.clear();
    }

    /// Where the `index`th answer's entries start.
    fn start_of(&self, index: usize) -> usize {
        index.checked_sub(1).map_or(0, |before| self.ends[before])
    }

    /// The position of the `index`th answer's error in `errors`, if it failed.
    fn error_at(&self, index: usize) -> Result<usize, usize> {
        if self.errors.is_empty() {
            return Err(0);
        }
        self.errors.binary_search_by_key(&index, |(at, _)| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Each answer as a plain list, a failed one as its message.
    type Model = Vec<Result<Vec<u32>, String>>;

    fn answers_of(model: &Model) -> Answers<u32> {
        let mut answers = Answers::new();
        for answer in model {
            match answer {
                Ok(entries) => answers.answer(entries.iter().copied()),
                Err(message) => answers.fail(message.clone().into()),
            }
        }
        answers
    }

    fn answer() -> impl Strategy<Value = Result<Vec<u32>, String>> {
        prop_oneof![
            3 => proptest::collection::vec(any::<u32>(), 0..5).prop_map(Ok),
            1 => "[a-z]{1,8}".prop_map(Err),
        ]
    }

    proptest! {
        /// Every answer reads back as given, whatever the mix of lists,
        /// empty lists and failures, and past the last there is none.
        #[test]
        fn answers_read_back_as_given(model in proptest::collection::vec(answer(), 0..40)) {
            let answers = answers_of(&model);
            prop_assert_eq!(answers.len(), model.len());
            prop_assert_eq!(answers.is_empty(), model.is_empty());
            for (at, expected) in model.iter().enumerate() {
                match (answers.get(at), expected) {
                    (Some(Ok(entries)), Ok(expected)) => prop_assert_eq!(entries, &expected[..]),
                    (Some(Err(error)), Err(expected)) => prop_assert_eq!(&error.to_string(), expected),
                    (got, _) => prop_assert!(false, "answer {} read back as {:?}", at, got.map(|a| a.map_err(|e| e.to_string()))),
                }
            }
            prop_assert!(answers.get(model.len()).is_none());
        }

        /// Taking answers in any order gives each one as given (a failure
        /// once: taken again it is empty) and changes no other answer.
        #[test]
        fn taking_an_answer_leaves_the_others(
            model in proptest::collection::vec(answer(), 1..40),
            order in proptest::collection::vec(any::<prop::sample::Index>(), 1..60),
        ) {
            let mut answers = answers_of(&model);
            let mut taken = vec![false; model.len()];
            for index in order {
                let at = index.index(model.len());
                match (answers.take(at), &model[at]) {
                    (Some(Ok(entries)), Ok(expected)) => prop_assert_eq!(&entries[..], &expected[..]),
                    (Some(Ok(entries)), Err(_)) => prop_assert!(taken[at] && entries.is_empty()),
                    (Some(Err(error)), Err(expected)) => {
                        prop_assert!(!taken[at]);
                        prop_assert_eq!(&error.to_string(), expected);
                    }
                    (Some(Err(error)), Ok(_)) => prop_assert!(false, "answer {} failed: {}", at, error),
                    (None, _) => prop_assert!(false, "answer {} missing", at),
                }
                taken[at] = true;
            }
            for (at, expected) in model.iter().enumerate() {
                if let (Ok(expected), Some(Ok(entries))) = (expected, answers.get(at)) {
                    prop_assert_eq!(entries, &expected[..]);
                }
            }
            prop_assert!(answers.take(model.len()).is_none());
        }
    }

    #[test]
    fn cleared_answers_are_empty_and_take_new_ones() {
        let mut answers = answers_of(&vec![Ok(vec![1, 2]), Err("down".into())]);
        answers.clear();
        assert!(answers.is_empty());
        assert!(answers.get(0).is_none());
        answers.answer([7]);
        assert_eq!(answers.get(0).unwrap().unwrap(), &[7]);
        assert_eq!(answers.len(), 1);
    }

    #[test]
    fn entries_taken_mutably_change_in_place() {
        let mut answers = answers_of(&vec![Ok(vec![3, 1, 2]), Ok(vec![9])]);
        if let Some(Ok(entries)) = answers.take(0) {
            entries.sort_unstable();
        }
        assert_eq!(answers.get(0).unwrap().unwrap(), &[1, 2, 3]);
        assert_eq!(answers.get(1).unwrap().unwrap(), &[9]);
    }
}
