// What the end-to-end study measures of a candidate model against a reference
// on held-out sequences (sampled by the reference: there is no tokenizer):
// next-token KL divergence, top-1 agreement, perplexity, and decoding speed.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <lowbit/model/sequences.hpp>
#include <vector>

namespace decoder {

using lowbit::Index;
using lowbit::MatrixF;
using lowbit::VectorF;
using lowbit::detail::require;
using lowbit::model::Model;
using lowbit::model::Sequence;

struct Metrics {
  double kl = 0.0;          // mean KL(reference || candidate) of the next-token distributions, nats
  double top1 = 0.0;        // fraction of positions where both models' most likely token agree
  double perplexity = 0.0;  // exp(mean negative log-likelihood of the candidate on the next tokens)
  double entropy = 0.0;     // mean entropy of the candidate's next-token distributions, nats
  Index positions = 0;
};

inline Eigen::VectorXd log_softmax(const Eigen::Ref<const VectorF>& logits) {
  const Eigen::VectorXd z = logits.cast<double>().array() - double(logits.maxCoeff());
  return z.array() - std::log(z.array().exp().sum());
}

// reference and candidate: sequence_logits of the two models on `sequences`.
inline Metrics compare(const std::vector<MatrixF>& reference, const std::vector<MatrixF>& candidate,
                       const std::vector<Sequence>& sequences) {
  require(reference.size() == sequences.size() && candidate.size() == sequences.size(),
          "compare: expected logits for each of the ", sequences.size(), " sequences");
  Metrics m;
  double nll = 0.0;
  for (std::size_t s = 0; s < sequences.size(); ++s) {
    require(reference[s].rows() == candidate[s].rows() &&
                reference[s].cols() == candidate[s].cols() &&
                reference[s].rows() + 1 == static_cast<Index>(sequences[s].size()),
            "compare: logits of sequence ", s, " do not match its length or each other");
    for (int token : sequences[s])
      require(token >= 0 && token < reference[s].cols(), "compare: token ", token,
              " is outside the vocabulary");
    for (Index t = 0; t < reference[s].rows(); ++t) {
      const Eigen::VectorXd log_p = log_softmax(reference[s].row(t).transpose());
      const Eigen::VectorXd log_q = log_softmax(candidate[s].row(t).transpose());
      m.kl += (log_p.array().exp() * (log_p - log_q).array()).sum();
      m.entropy -= (log_q.array().exp() * log_q.array()).sum();
      nll -= log_q(sequences[s][static_cast<std::size_t>(t + 1)]);
      Index best_p = 0, best_q = 0;
      log_p.maxCoeff(&best_p);
      log_q.maxCoeff(&best_q);
      m.top1 += best_p == best_q;
      ++m.positions;
    }
  }
  const double n = static_cast<double>(std::max<Index>(m.positions, 1));
  m.kl /= n;
  m.top1 /= n;
  m.entropy /= n;
  m.perplexity = std::exp(nll / n);
  return m;
}

// Greedy decoding speed of a model, one token per step through the KV cache.
inline double tokens_per_second(const Model& m, int tokens) {
  lowbit::model::Rng rng(1);
  const auto start = std::chrono::steady_clock::now();
  const Sequence s = lowbit::model::generate(m, tokens, 0.0f, rng);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return static_cast<double>(s.size() - 1) / seconds;
}

}  // namespace decoder
