// Arguments of the bindings that every training step calls. On each call that passes a
// keyword, pybind11 (3.1, keyword_index) makes and interns a new string for every declared
// parameter, given or not: ~70 ns each, 0.45 of the 2.0 us that a 32 x 10 x 256 gemm with one
// keyword took, half its product's time. These bindings are CPython vectorcall functions
// (METH_FASTCALL | METH_KEYWORDS: the arguments arrive as an array and the keywords' names as
// a tuple, with no tuple or dict built for the call, nor pybind11's dispatcher) that match the
// keys given against names interned once, as CPython matches its own functions' keywords;
// their docstrings start with the signature pybind11 would have written, from the same table.
#pragma once
#include <array>
#include <cmath>
#if defined(__GLIBCXX__)
#include <cxxabi.h>
#endif
#include <cstring>
#include <functional>
#include <initializer_list>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "checks.h"

namespace fastnn::bind {

constexpr size_t kMaxKeywords = 16;

struct Keyword {
    const char* name;
    py::object fallback;      // the default; nullptr: the argument is required
    bool positional = false;  // may be passed by position (these come first in a table)
    const char* type = nullptr;  // for the signature; nullptr: the default's type
};

// Parameters that may be passed by position: required, or with a default.
inline Keyword required(const char* name, const char* type = "object") { return {name, py::object(), true, type}; }
inline Keyword optional(const char* name, py::object fallback) { return {name, std::move(fallback), true}; }
// Keyword-only parameters: with a default, or required.
inline Keyword keyword(const char* name, py::object fallback) { return {name, std::move(fallback), false}; }
inline Keyword keyword_required(const char* name, const char* type) { return {name, py::object(), false, type}; }

class KeywordTable {
public:
    KeywordTable(std::initializer_list<Keyword> params) {
        if (params.size() > kMaxKeywords) throw std::logic_error("more keywords than kMaxKeywords");
        for (const Keyword& p : params) {
            // Arguments binds the i-th positional argument to slot i
            if (p.positional && positional_ != names_.size())
                throw std::logic_error("a KeywordTable lists its positional parameters first");
            if (p.positional) ++positional_;
            if (p.positional && !p.fallback) ++required_positional_;
            names_.push_back(p.name);
            // leaked: the tables are static, and outlive the interpreter
            interned_.push_back(PyUnicode_InternFromString(p.name));
            fallbacks_.push_back(p.fallback ? p.fallback.inc_ref().ptr() : nullptr);
            types_.push_back(p.type ? p.type
                             : !p.fallback || p.fallback.is_none() ? "object"
                             : py::str(py::type::handle_of(p.fallback).attr("__name__")).cast<std::string>());
        }
    }

    size_t size() const { return names_.size(); }
    size_t positional() const { return positional_; }
    size_t required_positional() const { return required_positional_; }
    size_t slot(const char* name) const {
        for (size_t i = 0; i < names_.size(); ++i)  // the same literal, mostly
            if (names_[i] == name) return i;
        for (size_t i = 0; i < names_.size(); ++i)
            if (std::strcmp(names_[i], name) == 0) return i;
        throw std::logic_error(std::string("no keyword '") + name + "' in this table");
    }
    // Slot of a given key, or size() if none: interned keys (literals at the call site)
    // match by pointer.
    size_t slot_of_key(PyObject* key) const {
        for (size_t i = 0; i < interned_.size(); ++i)
            if (key == interned_[i]) return i;
        for (size_t i = 0; i < interned_.size(); ++i)
            if (PyUnicode_Check(key) && PyUnicode_Compare(key, interned_[i]) == 0) return i;
        return size();
    }
    const char* name(size_t i) const { return names_[i]; }
    const std::string& type(size_t i) const { return types_[i]; }
    py::handle fallback(size_t i) const { return fallbacks_[i]; }

    // "fn(name: type = default, ..., *, name: type = default, ...) -> returns", then doc.
    std::string doc(const char* fn, const char* returns, const char* doc) const {
        std::string s = std::string(fn) + "(";
        for (size_t i = 0; i < size(); ++i) {
            py::handle f = fallbacks_[i];
            s += std::string(i ? ", " : "") + (i == positional_ ? "*, " : "") + names_[i] + ": " + types_[i] +
                 (f ? " = " + py::repr(f).cast<std::string>() : "");
        }
        return s + ") -> " + returns + "\n\n" + doc;
    }

private:
    size_t positional_ = 0, required_positional_ = 0;
    std::vector<const char*> names_;
    std::vector<std::string> types_;
    std::vector<PyObject*> interned_, fallbacks_;
};

// The arguments of one call, bound to the table's parameters as Python binds them, with
// CPython's TypeErrors: too many positional arguments, an unknown keyword, one given twice,
// required ones missing.
class Arguments {
public:
    // A vectorcall's arguments: args[0, n) by position, then one value per name in kwnames.
    Arguments(const char* fn, PyObject* const* args, size_t n, PyObject* kwnames, const KeywordTable& table)
        : fn_(fn), table_(table) {
        const size_t most = table.positional(), least = table.required_positional();
        size_t keyword_only = 0;
        const Py_ssize_t keywords = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
        for (Py_ssize_t j = 0; j < keywords; ++j) {
            PyObject* key = PyTuple_GET_ITEM(kwnames, j);
            PyObject* value = args[n + static_cast<size_t>(j)];
            const size_t i = table.slot_of_key(key);
            if (i == table.size())
                fail_type(std::string(fn) + "() got an unexpected keyword argument " + py::repr(key).cast<std::string>());
            if (i < n && i < most)
                fail_type(std::string(fn) + "() got multiple values for argument '" + table.name(i) + "'");
            keyword_only += i >= most;
            values_[i] = value;
        }
        if (n > most) {
            const auto count = [](size_t c, const char* what) {
                return std::to_string(c) + " " + what + " argument" + (c == 1 ? "" : "s");
            };
            fail_type(std::string(fn) + "() takes " +
                      (least == most ? std::to_string(most) : "from " + std::to_string(least) + " to " + std::to_string(most)) +
                      " positional argument" + (most == 1 ? "" : "s") + " but " +
                      (keyword_only ? count(n, "positional") + " (and " + count(keyword_only, "keyword-only") + ")"
                                    : std::to_string(n)) +
                      (n == 1 && !keyword_only ? " was" : " were") + " given");
        }
        for (size_t i = 0; i < n; ++i) values_[i] = args[i];
        missing(0, most, "positional");
        missing(most, table.size(), "keyword-only");
    }

    // The argument given, else the table's default, as T (TypeError naming it if it is not one).
    template <class T>
    T get(const char* name) const {
        const size_t i = table_.slot(name);
        py::handle h = values_[i] ? py::handle(values_[i]) : table_.fallback(i);
        if constexpr (std::is_same_v<T, py::handle>) {
            return h;
        } else if constexpr (std::is_same_v<T, py::object>) {
            return py::reinterpret_borrow<py::object>(h);
        } else {
            py::detail::make_caster<T> caster;
            if (!caster.load(h, true)) {
                PyErr_Clear();
                if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>)
                    if (PyLong_Check(h.ptr()))  // an int, but past T's range
                        fail_value(std::string(fn_) + ": argument '" + name + "' is out of range for a " +
                                   std::to_string(8 * sizeof(T)) + "-bit integer, got " +
                                   py::str(h).cast<std::string>());
                fail_type(std::string(fn_) + ": argument '" + name + "' must be " + table_.type(i) + ", got " + py::str(py::type::handle_of(h).attr("__name__")).cast<std::string>());
            }
            T value = py::detail::cast_op<T>(std::move(caster));
            if constexpr (std::is_same_v<T, float>)  // 1e39 would reach the kernel as inf
                if (std::isinf(value)) {
                    const double given = h.cast<double>();
                    if (std::isfinite(given))
                        fail_value(std::string(fn_) + ": argument '" + name + "' is beyond float32's range (the kernel's type), got " +
                                   py::str(h).cast<std::string>());
                }
            return value;
        }
    }

private:
    // "fn() missing 2 required positional arguments: 'a' and 'b'", as CPython says it
    void missing(size_t from, size_t to, const char* kind) const {
        std::vector<std::string> names;
        for (size_t i = from; i < to; ++i)
            if (!values_[i] && !table_.fallback(i)) names.push_back(std::string("'") + table_.name(i) + "'");
        if (names.empty()) return;
        std::string list = names[0];
        for (size_t i = 1; i < names.size(); ++i)
            list += (i + 1 < names.size() ? ", " : names.size() > 2 ? ", and " : " and ") + names[i];
        fail_type(std::string(fn_) + "() missing " + std::to_string(names.size()) + " required " + kind +
                  " argument" + (names.size() == 1 ? "" : "s") + ": " + list);
    }

    const char* fn_;
    const KeywordTable& table_;
    std::array<PyObject*, kMaxKeywords> values_{};
};

// The vectorcall functions: CPython passes a method its module (self) but not which of them
// was called, so each gets its own trampoline, to the function object in its slot (one slot
// per name: a module initialised again, in another interpreter, takes its name's slot back).
// With the module as self they print, pickle and compare as pybind11's functions do.
struct VectorcallFunction {
    virtual ~VectorcallFunction() = default;
    virtual PyObject* call(PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) const = 0;
};
constexpr size_t kMaxVectorcallFunctions = 16;
inline std::array<const VectorcallFunction*, kMaxVectorcallFunctions> g_vectorcall_functions{};
inline std::array<const char*, kMaxVectorcallFunctions> g_vectorcall_names{};
inline size_t g_vectorcall_count = 0;
using VectorcallEntry = PyObject* (*)(PyObject*, PyObject* const*, Py_ssize_t, PyObject*);
template <size_t I>
PyObject* vectorcall_trampoline(PyObject*, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    return g_vectorcall_functions[I]->call(args, nargs, kwnames);
}
template <size_t... I>
constexpr std::array<VectorcallEntry, sizeof...(I)> vectorcall_trampolines(std::index_sequence<I...>) {
    return {&vectorcall_trampoline<I>...};
}

// m.fn(...): body(const Arguments&) on the arguments bound to params (a static table), its
// docstring the signature then doc. C++ exceptions become Python's through pybind11's
// translators, as in any pybind11 binding.
template <class Body>
void def_with_table(py::module_& m, const char* fn, const KeywordTable& params, const char* returns,
                    const char* doc, Body body) {
    struct Function final : VectorcallFunction {  // leaked: a PyMethodDef outlives its functions
        Function(const char* name, const KeywordTable& params, Body body, std::string doc)
            : name(name), params(params), body(std::move(body)), doc(std::move(doc)) {}
        PyObject* call(PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) const override {
            try {
                const Arguments arguments(name, args, static_cast<size_t>(PyVectorcall_NARGS(nargs)), kwnames, params);
                using Result = decltype(body(arguments));
                if constexpr (std::is_void_v<Result>) {
                    body(arguments);
                    return py::none().release().ptr();
                } else if constexpr (std::is_base_of_v<py::handle, Result>) {
                    return py::object(body(arguments)).release().ptr();
                } else {
                    return py::cast(body(arguments)).release().ptr();
                }
            } catch (py::error_already_set& e) {
                e.restore();
#if defined(__GLIBCXX__)
            } catch (abi::__forced_unwind&) {  // a cancelled thread unwinds, as pybind11 lets it
                throw;
#endif
            } catch (...) {
                py::detail::try_translate_exceptions();
            }
            return nullptr;
        }
        const char* name;
        const KeywordTable& params;
        Body body;
        std::string doc;
        PyMethodDef def{};
    };
    static constexpr auto trampolines = vectorcall_trampolines(std::make_index_sequence<kMaxVectorcallFunctions>{});
    size_t slot = 0;
    while (slot < g_vectorcall_count && std::strcmp(g_vectorcall_names[slot], fn) != 0) ++slot;
    if (slot == kMaxVectorcallFunctions) throw std::logic_error("more than kMaxVectorcallFunctions");
    if (slot == g_vectorcall_count) g_vectorcall_names[g_vectorcall_count++] = fn;
    auto* f = new Function(fn, params, std::move(body), params.doc(fn, returns, doc));
    g_vectorcall_functions[slot] = f;
    f->def.ml_name = fn;
    f->def.ml_flags = METH_FASTCALL | METH_KEYWORDS;
    f->def.ml_doc = f->doc.c_str();
    f->def.ml_meth = reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(trampolines[slot]));
    py::object function = py::reinterpret_steal<py::object>(PyCFunction_NewEx(&f->def, m.ptr(), m.attr("__name__").ptr()));
    if (!function) throw py::error_already_set();
    m.add_object(fn, function);
}

}  // namespace fastnn::bind
