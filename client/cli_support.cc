#include "client/cli_support.h"

#include <cstdlib>
#include <filesystem>
#include <set>
#include <sstream>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "yaml-cpp/yaml.h"

namespace logit {

namespace {

// Edit distance with adjacent transpositions (optimal string alignment): "--epcohs" is 1 away.
size_t Distance(const std::string& a, const std::string& b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}

// The closest of `candidates` to `word`, when close enough to be a typo (or `word` is a prefix
// of exactly one of them); empty otherwise.
std::string Closest(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_distance = std::max<size_t>(2, word.size() / 3) + 1;
  std::vector<std::string> prefixed;
  for (const std::string& c : candidates) {
    if (word.size() >= 3 && absl::StartsWith(c, word)) prefixed.push_back(c);
    const size_t dist = Distance(word, c);
    if (dist < best_distance) {
      best_distance = dist;
      best = c;
    }
  }
  if (best.empty() && prefixed.size() == 1) return prefixed[0];
  return best;
}

// "--name" and "-n" spellings of an app's own flags (not its positionals).
std::vector<std::string> FlagNames(const CLI::App& app) {
  std::vector<std::string> out;
  for (const CLI::Option* opt : app.get_options()) {
    for (const std::string& l : opt->get_lnames()) out.push_back("--" + l);
    for (const std::string& s : opt->get_snames()) out.push_back("-" + s);
  }
  return out;
}

std::vector<std::string> SubcommandNames(const CLI::App& app) {
  std::vector<std::string> out;
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
    out.push_back(sub->get_name());
  }
  return out;
}

// The flag `name` of `app` or of an app above it (whose flags fall through), or null.
const CLI::Option* FindFlag(const CLI::App* app, const std::string& name) {
  for (; app != nullptr; app = app->get_parent()) {
    for (const CLI::Option* opt : app->get_options()) {
      if (!opt->nonpositional()) continue;
      if (opt->check_name(name)) return opt;
    }
  }
  return nullptr;
}

std::string CommandPath(const CLI::App* app) {
  std::vector<std::string> names;
  for (; app != nullptr; app = app->get_parent()) names.insert(names.begin(), app->get_name());
  return absl::StrJoin(names, " ");
}

bool LooksNumeric(const std::string& s) {
  return s.size() > 1 && s[0] == '-' && (std::isdigit(static_cast<unsigned char>(s[1])) || s[1] == '.');
}

std::string Scalar(const YAML::Node& node, const std::string& key, const std::string& path) {
  if (!node.IsScalar()) {
    throw std::runtime_error(
        absl::StrCat(path, ":", node.Mark().line + 1, ": ", key, ": must be a string"));
  }
  return node.as<std::string>();
}

}  // namespace

std::string ConfigPath() {
  if (const char* p = std::getenv("LOGIT_CONFIG"); p != nullptr && *p) return p;
  if (const char* x = std::getenv("XDG_CONFIG_HOME"); x != nullptr && *x) {
    return absl::StrCat(x, "/logit/config.yaml");
  }
  const char* home = std::getenv("HOME");
  return absl::StrCat(home != nullptr ? home : "", "/.config/logit/config.yaml");
}

absl::StatusOr<CliConfig> LoadConfig() {
  CliConfig c;
  c.path = ConfigPath();
  std::error_code ec;
  if (!std::filesystem::exists(c.path, ec)) return c;
  try {
    const YAML::Node root = YAML::LoadFile(c.path);
    if (root.IsNull()) return c;
    if (!root.IsMap()) {
      return absl::InvalidArgumentError(
          absl::StrCat(c.path, ": must be a mapping of settings (server: HOST:PORT, ...)"));
    }
    const std::filesystem::path dir = std::filesystem::path(c.path).parent_path();
    auto file = [&](const std::string& v) {
      return v.empty() || std::filesystem::path(v).is_absolute() ? v : (dir / v).string();
    };
    for (const auto& kv : root) {
      const std::string key = kv.first.as<std::string>();
      const std::string value = Scalar(kv.second, key, c.path);
      if (key == "server") {
        c.server = value;
      } else if (key == "token_file") {
        c.token_file = file(value);
      } else if (key == "tls_ca") {
        c.tls_ca = file(value);
      } else if (key == "tls_cert") {
        c.tls_cert = file(value);
      } else if (key == "tls_key") {
        c.tls_key = file(value);
      } else if (key == "output") {
        c.output = value;
      } else {
        const std::string hint = Closest(
            key, {"server", "token_file", "tls_ca", "tls_cert", "tls_key", "output"});
        return absl::InvalidArgumentError(absl::StrCat(
            c.path, ":", kv.first.Mark().line + 1, ": unknown setting '", key, "'",
            hint.empty() ? "" : absl::StrCat("; did you mean '", hint, "'?"),
            " (known: server, token_file, tls_ca, tls_cert, tls_key, output)"));
      }
    }
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(c.path, ":", e.mark.line + 1, ": not valid YAML: ", e.msg));
  } catch (const std::runtime_error& e) {
    return absl::InvalidArgumentError(e.what());
  }
  return c;
}

std::string Suggestion(const CLI::App& app, int argc, const char* const* argv) {
  const CLI::App* current = &app;
  bool positional_seen = false;  // a subcommand's own positional (a job id, a file)
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--") break;
    if (arg.size() > 1 && arg[0] == '-' && !LooksNumeric(arg)) {
      const std::string name = arg.substr(0, arg.find('='));
      const CLI::Option* opt = FindFlag(current, name);
      if (opt == nullptr) {
        std::vector<std::string> names;
        for (const CLI::App* a = current; a != nullptr; a = a->get_parent()) {
          for (std::string& n : FlagNames(*a)) names.push_back(std::move(n));
        }
        const std::string hint = Closest(name, names);
        return absl::StrCat("unknown flag '", name, "' for '", CommandPath(current), "'",
                            hint.empty() ? "" : absl::StrCat("; did you mean '", hint, "'?"));
      }
      // A flag that takes a value consumes the next word, unless it came with '='.
      if (arg.find('=') == std::string::npos && opt->get_type_size_max() > 0 &&
          opt->get_items_expected_max() > 0) {
        ++i;
      }
      continue;
    }
    const std::vector<std::string> subs = SubcommandNames(*current);
    if (!positional_seen && !subs.empty()) {
      const CLI::App* sub = nullptr;
      for (const CLI::App* s : current->get_subcommands([](const CLI::App*) { return true; })) {
        if (s->get_name() == arg) sub = s;
      }
      if (sub != nullptr) {
        current = sub;
        continue;
      }
      const std::string hint = Closest(arg, subs);
      return absl::StrCat("unknown command '", arg, "'",
                          current == &app ? "" : absl::StrCat(" for '", CommandPath(current), "'"),
                          hint.empty() ? absl::StrCat(" (commands: ", absl::StrJoin(subs, ", "), ")")
                                       : absl::StrCat("; did you mean '", hint, "'?"));
    }
    positional_seen = true;
  }
  return "";
}

std::string CompletionScript(const CLI::App& app, const std::string& shell) {
  // Every command path ("", "train", "model", "model get") with its words: its subcommands,
  // or its flags.
  struct Node {
    std::string path;
    std::vector<std::string> subs, flags;
  };
  std::vector<Node> nodes;
  std::vector<const CLI::App*> todo{&app};
  std::set<std::string> top, nested;
  while (!todo.empty()) {
    const CLI::App* a = todo.back();
    todo.pop_back();
    Node n;
    std::string path = CommandPath(a);
    n.path = path == app.get_name() ? "" : path.substr(app.get_name().size() + 1);
    n.subs = SubcommandNames(*a);
    n.flags = FlagNames(*a);
    for (const CLI::App* s : a->get_subcommands([](const CLI::App*) { return true; })) {
      todo.push_back(s);
      (a == &app ? top : nested).insert(s->get_name());
    }
    nodes.push_back(std::move(n));
  }
  const std::string globals = absl::StrJoin(FlagNames(app), " ");
  std::ostringstream s;
  if (shell == "zsh") {
    s << "#compdef logit\n# zsh completion for logit: logit completion zsh > \"${fpath[1]}/_logit\"\n"
         "autoload -U +X bashcompinit && bashcompinit\n";
  } else {
    s << "# bash completion for logit: source <(logit completion bash)\n";
  }
  s << "_logit() {\n"
       "  local cur prev w i cmd=\"\" sub=\"\" words=\"\" subs=\"\"\n"
       "  cur=\"${COMP_WORDS[COMP_CWORD]}\"\n"
       "  prev=\"${COMP_WORDS[COMP_CWORD-1]}\"\n"
       "  for ((i = 1; i < COMP_CWORD; i++)); do\n"
       "    w=\"${COMP_WORDS[i]}\"\n"
       "    if [[ -z \"$cmd\" ]]; then\n"
       "      case \"$w\" in "
    << absl::StrJoin(top, "|")
    << ") cmd=\"$w\" ;; esac\n"
       "    elif [[ -z \"$sub\" ]]; then\n"
       "      case \"$w\" in "
    << (nested.empty() ? "''" : absl::StrJoin(nested, "|"))
    << ") sub=\"$w\" ;; esac\n"
       "    fi\n"
       "  done\n"
       "  case \"$prev\" in\n"
       "    -o|--output-format) COMPREPLY=($(compgen -W \"table json yaml\" -- \"$cur\")); return ;;\n"
       "    --optimizer) COMPREPLY=($(compgen -W \"sgd adam lbfgs\" -- \"$cur\")); return ;;\n"
       "    --format) COMPREPLY=($(compgen -W \"csv libsvm npy idx\" -- \"$cur\")); return ;;\n"
       "    --device) COMPREPLY=($(compgen -W \"cpu cuda auto\" -- \"$cur\")); return ;;\n"
       "  esac\n"
       "  case \"$cmd $sub\" in\n";
  for (const Node& n : nodes) {
    const size_t space = n.path.find(' ');
    const std::string key =
        space == std::string::npos ? n.path + " " : n.path;  // "train " / "model get" / " "
    s << "    \"" << key << "\") subs=\"" << absl::StrJoin(n.subs, " ") << "\"; words=\""
      << absl::StrJoin(n.flags, " ") << "\" ;;\n";
  }
  s << "  esac\n"
       "  if [[ \"$cur\" == -* ]]; then\n"
       "    COMPREPLY=($(compgen -W \"$words "
    << globals
    << "\" -- \"$cur\"))\n"
       "  elif [[ -n \"$subs\" ]]; then\n"
       "    COMPREPLY=($(compgen -W \"$subs\" -- \"$cur\"))\n"
       "  else\n"
       "    COMPREPLY=($(compgen -f -- \"$cur\"))\n"
       "  fi\n"
       "}\n"
       "complete -o default -F _logit logit\n";
  return s.str();
}

}  // namespace logit
