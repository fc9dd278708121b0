// A Hugging Face model directory's tokenizer as the tokenizer.ggml.* keys of
// a GGUF file, written as llama.cpp's converter writes them for LLaMA,
// Mistral and Qwen2 (convert_hf_to_gguf.py _set_vocab_sentencepiece /
// _set_vocab_gpt2, gguf-py vocab.py SpecialVocab, 2026-08) and read by
// llama-vocab.cpp (llama_vocab::impl::load):
// - SentencePiece tokenizer.model (Llama 1/2, Mistral v0.1, TinyLlama):
//   model "llama", pre "default", tokens, scores, token_type. Every id below
//   config.json's vocab_size not in the model is "[PAD{id}]" (UNUSED, score
//   -10000); added_tokens.json and tokenizer_config.json's
//   added_tokens_decoder overwrite ids (score -1000: CONTROL when special or
//   looking special, else USER_DEFINED with U+2581 as a space).
// - byte-level BPE tokenizer.json (Llama 3, Qwen2): model "gpt2", tokens,
//   token_type, merges. The converter names the pre-tokenizer by hashing a
//   tokenization, which needs the tokenizers library; the Split regex of the
//   pre_tokenizer names it here, for the regexes llama.cpp implements under
//   those names ("llama-bpe", "qwen2"). Any other regex is refused: llama.cpp
//   would otherwise split text with the wrong rules without a word.
// - Special tokens as SpecialVocab finds them: the ids of tokenizer_config.json's
//   {bos,eos,unk,sep,pad,cls,mask}_token among tokenizer.json's added_tokens,
//   then config.json's *_token_id; add_{bos,eos,sep}_token from
//   tokenizer.json's TemplateProcessing and tokenizer_config.json; the chat
//   template. Absent keys take llama.cpp's defaults (SPM: bos 1, eos 2, unk 0,
//   add_bos).
//
// Files are hostile: a truncated or malformed tokenizer.model, JSON of the
// wrong shape, ids that are not dense, negative or past vocab_size throw
// lowbit::Error naming the file.
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "lowbit/core/error.hpp"
#include "lowbit/io/file_bytes.hpp"
#include "lowbit/io/gguf.hpp"
#include "lowbit/model/hf.hpp"

namespace lowbit::model {

// llama.cpp's token types (llama.h llama_token_type), as token_type stores them.
enum class GgufTokenType : std::int32_t {
  normal = 1,
  unknown = 2,
  control = 3,
  user_defined = 4,
  unused = 5,
  byte = 6,
};

namespace detail {

using Json = nlohmann::json;

// The token list of a vocabulary: scores only for SentencePiece, merges only
// for BPE.
struct GgufVocab {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<std::int32_t> types;
  std::vector<std::string> merges;
};

// vocab_size placeholder tokens "[PAD{id}]", as the converter starts from.
inline GgufVocab padding_vocab(int vocab_size, bool with_scores) {
  GgufVocab v;
  for (int i = 0; i < vocab_size; ++i) v.tokens.push_back("[PAD" + std::to_string(i) + "]");
  v.types.assign(std::size_t(vocab_size), std::int32_t(GgufTokenType::unused));
  if (with_scores) v.scores.assign(std::size_t(vocab_size), -10000.0f);
  return v;
}

// A JSON object's string (bool) field; "" (false) when absent or of another type.
inline std::string string_field(const Json& o, const char* key) {
  return o.is_object() && o.contains(key) && o.at(key).is_string() ? o.at(key).get<std::string>()
                                                                   : std::string();
}
inline bool bool_field(const Json& o, const char* key) {
  return o.is_object() && o.contains(key) && o.at(key).is_boolean() && o.at(key).get<bool>();
}

inline std::string in_dir(const std::string& dir, const char* name) {
  return (std::filesystem::path(dir) / name).string();
}

// The protobuf wire format, as much as tokenizer.model needs: varints,
// 32/64-bit fixed fields and length-delimited fields.
class ProtoReader {
 public:
  ProtoReader(const unsigned char* data, std::size_t size, const std::string& path)
      : p_(data), end_(data + size), path_(path) {}

  bool done() const { return p_ == end_; }

  std::uint64_t varint() {
    std::uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      lowbit::detail::require(p_ != end_, path_, ": truncated varint");
      const unsigned char byte = *p_++;
      v |= std::uint64_t(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) return v;
    }
    lowbit::detail::fail(path_, ": varint longer than 10 bytes");
  }

  // A field's tag: its number and wire type.
  std::pair<std::uint64_t, int> tag() {
    const std::uint64_t key = varint();
    const int wire = int(key & 7);
    lowbit::detail::require(key >> 3 != 0, path_, ": field number 0");
    lowbit::detail::require(wire == 0 || wire == 1 || wire == 2 || wire == 5, path_,
                            ": unsupported protobuf wire type ", wire, " (field ", key >> 3, ")");
    return {key >> 3, wire};
  }

  ProtoReader message() {
    const std::size_t size = length();
    ProtoReader inner(p_, size, path_);
    p_ += size;
    return inner;
  }

  std::string bytes() {
    const std::size_t size = length();
    std::string s(reinterpret_cast<const char*>(p_), size);
    p_ += size;
    return s;
  }

  float fixed32_float() {
    lowbit::detail::require(end_ - p_ >= 4, path_, ": truncated 32-bit field");
    std::uint32_t bits = std::uint32_t(p_[0]) | std::uint32_t(p_[1]) << 8 |
                         std::uint32_t(p_[2]) << 16 | std::uint32_t(p_[3]) << 24;
    p_ += 4;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }

  void skip(int wire) {
    if (wire == 0) {
      varint();
    } else if (wire == 2) {
      p_ += length();
    } else {
      const std::ptrdiff_t size = wire == 1 ? 8 : 4;
      lowbit::detail::require(end_ - p_ >= size, path_, ": truncated fixed-size field");
      p_ += size;
    }
  }

  // A field of a wire type the schema fixes.
  void expect(std::uint64_t field, int wire, int expected) const {
    lowbit::detail::require(wire == expected, path_, ": field ", field, " has wire type ", wire,
                            ", expected ", expected);
  }

 private:
  std::size_t length() {
    const std::uint64_t size = varint();
    lowbit::detail::require(size <= std::uint64_t(end_ - p_), path_, ": a field of ", size,
                            " bytes runs past the end of its message");
    return std::size_t(size);
  }

  const unsigned char* p_;
  const unsigned char* end_;
  const std::string& path_;
};

struct SentencePiece {
  std::string piece;
  float score = 0.0f;
  std::int32_t type = 1;  // sentencepiece_model.proto: NORMAL 1 .. BYTE 6
};

// The pieces of a SentencePiece ModelProto (field 1: repeated SentencePiece
// {1: piece, 2: score, 3: type}); the trainer and normalizer specs are skipped.
inline std::vector<SentencePiece> read_sentencepiece_model(const std::string& path) {
  const io::MappedBytes bytes = io::MappedBytes::map(path);
  ProtoReader model(bytes.data(), bytes.size(), path);
  std::vector<SentencePiece> pieces;
  while (!model.done()) {
    const auto [field, wire] = model.tag();
    if (field != 1) {
      model.skip(wire);
      continue;
    }
    model.expect(field, wire, 2);
    ProtoReader message = model.message();
    SentencePiece& piece = pieces.emplace_back();
    while (!message.done()) {
      const auto [inner, inner_wire] = message.tag();
      if (inner == 1) {
        message.expect(inner, inner_wire, 2);
        piece.piece = message.bytes();
      } else if (inner == 2) {
        message.expect(inner, inner_wire, 5);
        piece.score = message.fixed32_float();
      } else if (inner == 3) {
        message.expect(inner, inner_wire, 0);
        const std::uint64_t type = message.varint();
        lowbit::detail::require(type >= 1 && type <= 6, path, ": piece ", pieces.size() - 1,
                                " has type ", type, ", expected 1..6");
        piece.type = std::int32_t(type);
      } else {
        message.skip(inner_wire);
      }
    }
  }
  lowbit::detail::require(!pieces.empty(), path, ": no SentencePiece pieces");
  return pieces;
}

// convert_hf_to_gguf.py does_token_look_special: added tokens some models
// forget to mark special.
inline bool looks_special(const std::string& t) {
  auto wrapped = [&](const std::string& open, const std::string& close) {
    return t.size() >= open.size() + close.size() && t.compare(0, open.size(), open) == 0 &&
           t.compare(t.size() - close.size(), close.size(), close) == 0;
  };
  return t == "<pad>" || t == "<mask>" || t == "<2mass>" || t == "[@BOS@]" || wrapped("<|", "|>") ||
         wrapped("<\xef\xbd\x9c", "\xef\xbd\x9c>") || wrapped("<unused", ">");
}

// A non-special added token as llama.cpp matches it: SentencePiece's U+2581
// word marker as the space it stands for.
inline std::string with_spaces(std::string t) {
  const std::string marker = "\xe2\x96\x81";
  for (std::size_t at = t.find(marker); at != std::string::npos; at = t.find(marker, at))
    t.replace(at, marker.size(), " ");
  return t;
}

// An added token's type, as the converter gives it.
inline std::int32_t added_token_type(const std::string& content, bool special) {
  return std::int32_t(special || looks_special(content) ? GgufTokenType::control
                                                        : GgufTokenType::user_defined);
}

// A token id from a JSON value or object key: an integer in [0, vocab_size).
inline int token_id(const Json& value, const std::string& path, const std::string& what) {
  lowbit::detail::require(value.is_number_integer(), path, ": ", what,
                          " is not an integer token id");
  const std::int64_t id = value.get<std::int64_t>();
  lowbit::detail::require(id >= 0 && id <= INT32_MAX, path, ": ", what, " has token id ", id);
  return int(id);
}

inline int token_id_key(const std::string& key, const std::string& path) {
  char* end = nullptr;
  const long id = std::strtol(key.c_str(), &end, 10);
  lowbit::detail::require(
      !key.empty() && key[0] >= '0' && key[0] <= '9' && *end == '\0' && id <= INT32_MAX, path,
      ": added_tokens_decoder key '", key, "' is not a token id");
  return int(id);
}

// _create_vocab_sentencepiece: the model's pieces, then the added tokens.
inline GgufVocab sentencepiece_vocab(const std::string& dir, int vocab_size) {
  const std::string path = in_dir(dir, "tokenizer.model");
  const std::vector<SentencePiece> pieces = read_sentencepiece_model(path);
  lowbit::detail::require(pieces.size() <= std::size_t(vocab_size), path, ": ", pieces.size(),
                          " pieces, more than config.json's vocab_size ", vocab_size);
  GgufVocab v = padding_vocab(vocab_size, true);
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    // The converter asks IsUnknown, IsControl, IsUnused, IsByte: a
    // USER_DEFINED piece is NORMAL.
    const std::int32_t type = pieces[i].type == std::int32_t(GgufTokenType::user_defined)
                                  ? std::int32_t(GgufTokenType::normal)
                                  : pieces[i].type;
    v.tokens[i] = pieces[i].piece;
    v.scores[i] = pieces[i].score;
    v.types[i] = type;
  }
  auto set = [&](int id, std::string content, std::int32_t type) {
    if (id >= vocab_size) return;  // no embedding row: the converter skips it too
    v.tokens[std::size_t(id)] = std::move(content);
    v.scores[std::size_t(id)] = -1000.0f;
    v.types[std::size_t(id)] = type;
  };
  const std::string added_path = in_dir(dir, "added_tokens.json");
  if (std::filesystem::exists(added_path)) {
    const Json added = read_json_object(added_path);
    for (const auto& [content, id] : added.items())
      set(token_id(id, added_path, "'" + content + "'"), content,
          std::int32_t(GgufTokenType::user_defined));
  }
  const std::string config_path = in_dir(dir, "tokenizer_config.json");
  if (!std::filesystem::exists(config_path)) return v;
  const Json config = read_json_object(config_path);
  const Json decoder = config.value("added_tokens_decoder", Json::object());
  lowbit::detail::require(decoder.is_object(), config_path,
                          ": added_tokens_decoder is not an object");
  for (const auto& [key, token] : decoder.items()) {
    lowbit::detail::require(
        token.is_object() && token.contains("content") && token.at("content").is_string(),
        config_path, ": added_tokens_decoder '", key, "' has no content");
    const std::string content = token.at("content").get<std::string>();
    const bool special = bool_field(token, "special");
    const std::int32_t type = added_token_type(content, special);
    set(token_id_key(key, config_path),
        type == std::int32_t(GgufTokenType::control) ? content : with_spaces(content), type);
  }
  return v;
}

// The Split regexes of the byte-level pre-tokenizers this file knows, by the
// name llama.cpp gives them (llama-vocab.cpp quotes each "from tokenizer.json").
inline std::string bpe_pre_tokenizer(const Json& tokenizer, const std::string& path) {
  static const std::map<std::string, std::string> known = {
      {R"re((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re",
       "llama-bpe"},
      {R"re((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re",
       "qwen2"},
  };
  const Json pre = tokenizer.value("pre_tokenizer", Json());
  std::vector<Json> steps;
  if (pre.is_object() && string_field(pre, "type") == "Sequence" && pre.contains("pretokenizers") &&
      pre.at("pretokenizers").is_array())
    steps.assign(pre.at("pretokenizers").begin(), pre.at("pretokenizers").end());
  else
    steps.push_back(pre);
  for (const Json& step : steps) {
    if (!step.is_object() || string_field(step, "type") != "Split") continue;
    const Json pattern = step.value("pattern", Json());
    if (!pattern.is_object() || !pattern.contains("Regex") || !pattern.at("Regex").is_string())
      continue;
    const auto found = known.find(pattern.at("Regex").get<std::string>());
    if (found != known.end()) return found->second;
  }
  lowbit::detail::fail(path,
                       ": pre-tokenizer not recognized (lowbit knows the Split regexes of "
                       "Llama 3 and Qwen2); llama.cpp would split text differently from this "
                       "tokenizer");
}

// tokenizer.json's merges: "a b" strings, or [a, b] pairs (transformers
// 4.45+), whose spaces SpecialVocab writes as U+0120 to keep "a b" parseable.
inline std::vector<std::string> bpe_merges(const Json& merges, const std::string& path) {
  std::vector<std::string> out;
  if (merges.is_null()) return out;
  lowbit::detail::require(merges.is_array(), path, ": model.merges is not an array");
  for (const Json& m : merges) {
    if (m.is_string()) {
      out.push_back(m.get<std::string>());
      continue;
    }
    lowbit::detail::require(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(),
                            path, ": merge ", out.size(), " is neither \"a b\" nor [a, b]");
    auto escaped = [](std::string part) {
      for (std::size_t at = part.find(' '); at != std::string::npos; at = part.find(' ', at))
        part.replace(at, 1, "\xc4\xa0");
      return part;
    };
    const std::string pair =
        escaped(m[0].get<std::string>()) + " " + escaped(m[1].get<std::string>());
    out.push_back(pair);
  }
  return out;
}

// get_vocab_base: model.vocab (ids dense 0..n-1) and the added tokens by id,
// "[PAD{id}]" for ids neither names, up to vocab_size.
inline GgufVocab bpe_vocab(const Json& tokenizer, const std::string& path, int vocab_size) {
  const Json model = tokenizer.value("model", Json());
  lowbit::detail::require(model.is_object() && string_field(model, "type") == "BPE", path,
                          ": model.type is not \"BPE\"");
  lowbit::detail::require(!bool_field(model, "byte_fallback"), path,
                          ": a byte-fallback BPE tokenizer (Llama 2 style) needs its "
                          "tokenizer.model, which the directory lacks");
  lowbit::detail::require(model.contains("vocab") && model.at("vocab").is_object(), path,
                          ": model.vocab is not an object");
  GgufVocab v = padding_vocab(vocab_size, false);
  std::vector<bool> named(std::size_t(vocab_size), false);
  auto name = [&](int id, const std::string& content, std::int32_t type, const char* what) {
    lowbit::detail::require(id < vocab_size, path, ": ", what, " '", content, "' has id ", id,
                            ", past config.json's vocab_size ", vocab_size);
    const std::size_t i = std::size_t(id);
    lowbit::detail::require(!named[i] || v.tokens[i] == content, path, ": token id ", id,
                            " is both '", v.tokens[i], "' and '", content, "'");
    named[i] = true;
    v.tokens[i] = content;
    v.types[i] = type;
  };
  const std::size_t n = model.at("vocab").size();
  for (const auto& [content, id] : model.at("vocab").items()) {
    const int i = token_id(id, path, "model.vocab '" + content + "'");
    lowbit::detail::require(std::size_t(i) < n, path, ": model.vocab ids are not dense 0..", n - 1,
                            " ('", content, "' has ", i, ")");
    name(i, content, std::int32_t(GgufTokenType::normal), "model.vocab token");
  }
  const Json added = tokenizer.value("added_tokens", Json::array());
  lowbit::detail::require(added.is_array(), path, ": added_tokens is not an array");
  for (const Json& token : added) {
    lowbit::detail::require(token.is_object() && token.contains("content") &&
                                token.at("content").is_string() && token.contains("id"),
                            path, ": an added token lacks content or id");
    const std::string content = token.at("content").get<std::string>();
    const std::int32_t type = added_token_type(content, bool_field(token, "special"));
    name(token_id(token.at("id"), path, "added token '" + content + "'"),
         type == std::int32_t(GgufTokenType::control) ? content : with_spaces(content), type,
         "added token");
  }
  v.merges = bpe_merges(model.value("merges", Json()), path);
  return v;
}

// The string of tokenizer_config.json's `key` (a string or {content}); "" if none.
inline std::string config_token(const Json& config, const std::string& key) {
  const Json e = config.value(key, Json());
  if (e.is_string()) return e.get<std::string>();
  return e.is_object() && e.value("content", Json()).is_string()
             ? e.at("content").get<std::string>()
             : std::string();
}

// The first token of a template item that is a special token; "" if none.
inline std::string template_special(const Json& item) {
  if (!item.is_object() || !item.contains("SpecialToken")) return "";
  const Json& s = item.at("SpecialToken");
  return s.is_object() && s.value("id", Json()).is_string() ? s.at("id").get<std::string>() : "";
}

// SpecialVocab's reading of tokenizer.json's post_processor: a
// TemplateProcessing whose single-sequence template starts (ends) with a
// special token adds bos (eos); a trailing token other than eos_token becomes
// eos and the old eos eot. Returns whether eot was named so.
inline bool template_specials(const Json& tokenizer, Json& config,
                              std::map<std::string, bool>& add) {
  const Json post = tokenizer.value("post_processor", Json());
  if (!post.is_object()) return false;
  const Json processors = post.value("processors", Json::array({post}));
  if (!processors.is_array()) return false;
  bool eot = false;
  for (const Json& p : processors) {
    if (!p.is_object() || string_field(p, "type") != "TemplateProcessing") continue;
    const Json single = p.value("single", Json::array());
    if (!single.is_array() || single.size() < 2) continue;
    if (const std::string first = template_special(single.front()); !first.empty())
      add["bos"] = config.empty() || first == config_token(config, "bos_token") ||
                   first == config_token(config, "cls_token");
    if (const std::string last = template_special(single.back()); !last.empty()) {
      const std::string eos = config_token(config, "eos_token");
      if (!config.empty() && last != eos) {
        if (!eot && !eos.empty()) config["eot_token"] = eos;
        eot = true;
        config["eos_token"] = last;
      }
      add["eos"] = true;
    }
  }
  return eot;
}

// The chat template SpecialVocab writes: tokenizer_config.json's, else
// chat_template.jinja's, else chat_template.json's (a named-template list is
// not carried over).
inline std::optional<std::string> chat_template(const std::string& dir, const Json& config) {
  Json value;
  if (config.contains("chat_template")) {
    value = config.at("chat_template");
  } else if (std::filesystem::exists(in_dir(dir, "chat_template.jinja"))) {
    const io::MappedBytes text = io::MappedBytes::map(in_dir(dir, "chat_template.jinja"));
    value = std::string(reinterpret_cast<const char*>(text.data()), text.size());
  } else if (std::filesystem::exists(in_dir(dir, "chat_template.json"))) {
    value = read_json_object(in_dir(dir, "chat_template.json")).value("chat_template", Json());
  }
  if (!value.is_string()) return std::nullopt;
  return value.get<std::string>();
}

// SpecialVocab: special token ids (the first source naming a type wins: the
// tokenizer_config.json token found among tokenizer.json's added_tokens, then
// config.json's *_token_id), add_*_token flags and the chat template.
// `tokenizer` is tokenizer.json, or {} without one.
inline void add_special_tokens(io::GgufWriter& out, const std::string& dir, const Json& tokenizer,
                               int vocab_size) {
  const std::string json_path = in_dir(dir, "tokenizer.json"),
                    config_path = in_dir(dir, "tokenizer_config.json");
  Json config =
      std::filesystem::exists(config_path) ? read_json_object(config_path) : Json::object();
  std::map<std::string, bool> add;
  std::vector<std::string> types = {"bos", "eos", "unk", "sep", "pad", "cls", "mask"};
  if (template_specials(tokenizer, config, add)) types.push_back("eot");
  std::map<std::string, int> ids;
  auto set_id = [&](const std::string& type, const Json& id, const std::string& path) {
    if (!id.is_number_integer() || ids.count(type)) return;
    const int value = token_id(id, path, type + " token");
    if (value < vocab_size) ids[type] = value;
  };
  const Json added = tokenizer.value("added_tokens", Json::array());
  for (const std::string& type : config.empty() ? std::vector<std::string>{} : types) {
    const Json flag = config.value("add_" + type + "_token", Json());
    if (flag.is_boolean()) add[type] = flag.get<bool>();
    const std::string content = config_token(config, type + "_token");
    for (const Json& token : added.is_array() && !content.empty() ? added : Json::array())
      if (token.is_object() && token.value("content", Json()) == content) {
        set_id(type, token.value("id", Json()), json_path);
        break;
      }
  }
  if (std::filesystem::exists(in_dir(dir, "config.json"))) {
    const Json c = read_json_object(in_dir(dir, "config.json"));
    for (const std::string& type : types)
      set_id(type, c.value(type + "_token_id", Json()), in_dir(dir, "config.json"));
  }
  static const std::map<std::string, std::string> id_keys = {
      {"bos", "bos_token_id"},     {"eos", "eos_token_id"},
      {"unk", "unknown_token_id"}, {"sep", "seperator_token_id"},  // sic: llama.cpp's spelling
      {"pad", "padding_token_id"}, {"cls", "cls_token_id"},
      {"mask", "mask_token_id"},   {"eot", "eot_token_id"}};
  for (const auto& [type, id] : ids)
    out.set("tokenizer.ggml." + id_keys.at(type), static_cast<std::uint32_t>(id));
  for (const auto& [type, value] : add)  // GGUFWriter has add_add_{bos,eos,sep}_token only
    if (type == "bos" || type == "eos" || type == "sep")
      out.set("tokenizer.ggml.add_" + type + "_token", value);
  if (!config.empty())
    if (const std::optional<std::string> t = chat_template(dir, config))
      out.set("tokenizer.chat_template", *t);
}

// llama.cpp maps token texts back to ids and aborts on a text held twice
// (llama-vocab.cpp asserts id_to_token.size() == token_to_id.size()).
inline void require_distinct_tokens(const std::vector<std::string>& tokens,
                                    const std::string& dir) {
  std::map<std::string, std::size_t> seen;
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    const auto [it, fresh] = seen.emplace(tokens[i], i);
    lowbit::detail::require(fresh, dir, ": token '", tokens[i], "' is both id ", it->second,
                            " and id ", i, "; llama.cpp needs distinct token texts");
  }
}

}  // namespace detail

// Writes the tokenizer.ggml.* keys of the Hugging Face directory `dir`'s
// tokenizer (tokenizer.model, else a byte-level BPE tokenizer.json) for a
// model of `vocab_size` tokens; false, writing nothing, when it has neither.
inline bool add_gguf_tokenizer(io::GgufWriter& out, const std::string& dir, int vocab_size) {
  lowbit::detail::require(vocab_size > 0, "add_gguf_tokenizer: vocab_size ", vocab_size,
                          ", expected > 0");
  const std::string json_path = detail::in_dir(dir, "tokenizer.json");
  const bool has_json = std::filesystem::exists(json_path);
  const detail::Json tokenizer =
      has_json ? detail::read_json_object(json_path) : detail::Json::object();
  detail::GgufVocab vocab;
  if (std::filesystem::exists(detail::in_dir(dir, "tokenizer.model"))) {
    vocab = detail::sentencepiece_vocab(dir, vocab_size);
    out.set("tokenizer.ggml.model", "llama");
    out.set("tokenizer.ggml.pre", "default");
  } else if (has_json) {
    vocab = detail::bpe_vocab(tokenizer, json_path, vocab_size);
    out.set("tokenizer.ggml.model", "gpt2");
    out.set("tokenizer.ggml.pre", detail::bpe_pre_tokenizer(tokenizer, json_path));
  } else {
    return false;
  }
  detail::require_distinct_tokens(vocab.tokens, dir);
  out.set("tokenizer.ggml.tokens", std::move(vocab.tokens));
  if (!vocab.scores.empty()) out.set("tokenizer.ggml.scores", vocab.scores);
  out.set("tokenizer.ggml.token_type", vocab.types);
  if (!vocab.merges.empty()) out.set("tokenizer.ggml.merges", std::move(vocab.merges));
  detail::add_special_tokens(out, dir, tokenizer, vocab_size);
  return true;
}

}  // namespace lowbit::model
