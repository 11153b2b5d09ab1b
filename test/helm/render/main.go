// Command render is a small stand-in for `helm template`, for the chart tests only (no helm binary
// is available here). It implements the parts of Helm 3's rendering that helm/meterd uses, with
// Helm's semantics:
//
//   - text/template with sprig.TxtFuncMap() (minus env/expandenv, as Helm) plus include, tpl,
//     required, toYaml, toJson, fromYaml, fromYamlArray, fromJson, fromJsonArray and lookup (empty);
//   - .Values: values.yaml coalesced with each -f file (later files win, maps deep-merged, a null
//     deletes a default) and --set a.b=c; numbers are float64 as Helm's YAML→JSON loading makes them;
//   - .Release, .Chart (Chart.yaml with Helm's capitalised field names), .Capabilities
//     (APIVersions.Has, KubeVersion; Chart.yaml kubeVersion is checked), .Files (Get, GetBytes,
//     Glob, AsConfig, AsSecrets, Lines), .Template (Name, BasePath);
//   - every templates/* file except _* partials and NOTES.txt becomes output; each rendered file is
//     split on `---`, empty documents dropped, and printed with a `# Source:` comment.
//
// It does not validate values.schema.json (the TypeScript test does, on --values-json output), and
// knows nothing of subcharts, hooks or lookup against a cluster.
//
// Build offline with Debian's Go packages:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o /tmp/render ./test/helm/render
//
// Usage:
//
//	render --chart helm/meterd [-f values.yaml]... [--set key.path=value]... [--release-name meterd]
//	       [--namespace default] [--kube-version v1.30.0] [--api-versions group/version]...
//	       [--strict] [--extra-template file]... [--notes | --values-json]
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/template"

	semver "github.com/Masterminds/semver"
	sprig "github.com/Masterminds/sprig"
	yaml "gopkg.in/yaml.v3"
)

// includeDepthMax mirrors Helm's recursion guard on include (recursionMaxNums).
const includeDepthMax = 1000

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// ChartMetadata carries the Chart.yaml fields under the names Helm exposes as .Chart.
type ChartMetadata struct {
	APIVersion   string            `yaml:"apiVersion"`
	Name         string            `yaml:"name"`
	Version      string            `yaml:"version"`
	AppVersion   string            `yaml:"appVersion"`
	KubeVersion  string            `yaml:"kubeVersion"`
	Description  string            `yaml:"description"`
	Type         string            `yaml:"type"`
	Home         string            `yaml:"home"`
	Icon         string            `yaml:"icon"`
	Keywords     []string          `yaml:"keywords"`
	Sources      []string          `yaml:"sources"`
	Maintainers  []Maintainer      `yaml:"maintainers"`
	Annotations  map[string]string `yaml:"annotations"`
	Deprecated   bool              `yaml:"deprecated"`
	Dependencies []interface{}     `yaml:"dependencies"`
}

type Maintainer struct {
	Name  string `yaml:"name"`
	Email string `yaml:"email"`
	URL   string `yaml:"url"`
}

// VersionSet is .Capabilities.APIVersions.
type VersionSet []string

func (v VersionSet) Has(apiVersion string) bool {
	for _, x := range v {
		if x == apiVersion {
			return true
		}
	}
	return false
}

// KubeVersion is .Capabilities.KubeVersion.
type KubeVersion struct {
	Version string
	Major   string
	Minor   string
}

func (k KubeVersion) String() string     { return k.Version }
func (k KubeVersion) GitVersion() string { return k.Version }

type Capabilities struct {
	APIVersions VersionSet
	KubeVersion KubeVersion
	HelmVersion map[string]string
}

// Files is .Files: every chart file outside templates/ and charts/, except Chart.yaml,
// values.yaml and values.schema.json (as Helm's loader sorts them).
type Files map[string][]byte

func (f Files) GetBytes(name string) []byte { return f[name] }
func (f Files) Get(name string) string      { return string(f[name]) }

func (f Files) Glob(pattern string) Files {
	out := Files{}
	for name, data := range f {
		if ok, _ := path.Match(pattern, name); ok {
			out[name] = data
		}
	}
	return out
}

func (f Files) AsConfig() string {
	if len(f) == 0 {
		return ""
	}
	m := map[string]interface{}{}
	for name, data := range f {
		m[path.Base(name)] = string(data)
	}
	return toYaml(m)
}

func (f Files) AsSecrets() string {
	if len(f) == 0 {
		return ""
	}
	m := map[string]interface{}{}
	for name, data := range f {
		m[path.Base(name)] = base64.StdEncoding.EncodeToString(data)
	}
	return toYaml(m)
}

func (f Files) Lines(name string) []string {
	data, ok := f[name]
	if !ok {
		return []string{}
	}
	return strings.Split(strings.TrimRight(string(data), "\n"), "\n")
}

type options struct {
	chartDir       string
	valueFiles     stringList
	setValues      stringList
	releaseName    string
	namespace      string
	kubeVersion    string
	apiVersions    stringList
	strict         bool
	extraTemplates stringList
	notes          bool
	valuesJSON     bool
}

func main() {
	var o options
	flag.StringVar(&o.chartDir, "chart", "", "chart directory")
	flag.Var(&o.valueFiles, "f", "values file (repeatable; later files win)")
	flag.Var(&o.valueFiles, "values", "values file (repeatable; later files win)")
	flag.Var(&o.setValues, "set", "key.path=value (repeatable; applied after the -f files)")
	flag.StringVar(&o.releaseName, "release-name", "meterd", "release name")
	flag.StringVar(&o.namespace, "namespace", "default", "release namespace")
	flag.StringVar(&o.kubeVersion, "kube-version", "v1.30.0", "Kubernetes version for .Capabilities")
	flag.Var(&o.apiVersions, "api-versions", "extra API version for .Capabilities.APIVersions (repeatable)")
	flag.BoolVar(&o.strict, "strict", false, "fail on a missing map key, like `helm lint --strict`")
	flag.Var(&o.extraTemplates, "extra-template", "a file rendered as if it were a template of a parent chart (repeatable)")
	flag.BoolVar(&o.notes, "notes", false, "print the rendered NOTES.txt instead of the manifests")
	flag.BoolVar(&o.valuesJSON, "values-json", false, "print the merged values as JSON instead of the manifests")
	flag.Parse()
	if o.chartDir == "" {
		fail(errors.New("--chart is required"))
	}
	out, err := run(o)
	if err != nil {
		fail(err)
	}
	os.Stdout.WriteString(out)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "Error:", err)
	os.Exit(1)
}

func run(o options) (string, error) {
	metadata, err := loadChartMetadata(filepath.Join(o.chartDir, "Chart.yaml"))
	if err != nil {
		return "", err
	}
	values, err := loadValues(o)
	if err != nil {
		return "", err
	}
	if o.valuesJSON {
		data, err := json.MarshalIndent(values, "", "  ")
		if err != nil {
			return "", err
		}
		return string(data) + "\n", nil
	}
	capabilities, err := makeCapabilities(o)
	if err != nil {
		return "", err
	}
	if metadata.KubeVersion != "" {
		if err := checkKubeVersion(metadata.KubeVersion, o.kubeVersion); err != nil {
			return "", err
		}
	}
	templates, files, err := loadChartFiles(o.chartDir, metadata.Name)
	if err != nil {
		return "", err
	}
	for _, extra := range o.extraTemplates {
		data, err := os.ReadFile(extra)
		if err != nil {
			return "", err
		}
		templates["parent/templates/"+filepath.Base(extra)] = string(data)
	}
	r := newRenderer(o.strict)
	if err := r.parse(templates); err != nil {
		return "", err
	}
	top := map[string]interface{}{
		"Values": values,
		"Release": map[string]interface{}{
			"Name": o.releaseName, "Namespace": o.namespace, "Service": "Helm",
			"IsInstall": true, "IsUpgrade": false, "Revision": 1,
		},
		"Chart":        metadata,
		"Capabilities": capabilities,
		"Files":        files,
	}
	names := make([]string, 0, len(templates))
	for name := range templates {
		names = append(names, name)
	}
	sort.Strings(names)
	notesName := metadata.Name + "/templates/NOTES.txt"
	var out strings.Builder
	for _, name := range names {
		base := path.Base(name)
		isNotes := name == notesName
		if strings.HasPrefix(base, "_") || isNotes != o.notes {
			continue
		}
		rendered, err := r.render(name, top)
		if err != nil {
			return "", err
		}
		if o.notes {
			out.WriteString(rendered)
			continue
		}
		for _, document := range splitManifests(rendered) {
			fmt.Fprintf(&out, "---\n# Source: %s\n%s\n", name, document)
		}
	}
	return out.String(), nil
}

func loadChartMetadata(file string) (*ChartMetadata, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var m ChartMetadata
	if err := yaml.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("Chart.yaml: %w", err)
	}
	if m.APIVersion != "v2" || m.Name == "" || m.Version == "" {
		return nil, errors.New("Chart.yaml: apiVersion v2, name and version are required")
	}
	if _, err := semver.StrictNewVersion(m.Version); err != nil {
		return nil, fmt.Errorf("Chart.yaml: version %q is not SemVer 2: %w", m.Version, err)
	}
	return &m, nil
}

// loadChartFiles splits the chart's files as Helm's loader does: templates/* are templates (named
// "<chart>/templates/<file>"), Chart.yaml, values.yaml and values.schema.json are the chart itself,
// and everything else not ignored by .helmignore (a subset: plain names and globs) is .Files.
func loadChartFiles(chartDir, chartName string) (map[string]string, Files, error) {
	ignored := readHelmignore(filepath.Join(chartDir, ".helmignore"))
	templates := map[string]string{}
	files := Files{}
	err := filepath.WalkDir(chartDir, func(file string, entry fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(chartDir, file)
		rel = filepath.ToSlash(rel)
		if rel == "." {
			return nil
		}
		if isIgnored(ignored, rel, entry.IsDir()) {
			if entry.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if entry.IsDir() {
			return nil
		}
		data, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		switch {
		case strings.HasPrefix(rel, "templates/"):
			templates[chartName+"/"+rel] = string(data)
		case strings.HasPrefix(rel, "charts/"):
			return fmt.Errorf("%s: subcharts are not supported by this renderer", rel)
		case rel == "Chart.yaml" || rel == "values.yaml" || rel == "values.schema.json":
		default:
			files[rel] = data
		}
		return nil
	})
	return templates, files, err
}

func readHelmignore(file string) []string {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	var patterns []string
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			patterns = append(patterns, line)
		}
	}
	return patterns
}

func isIgnored(patterns []string, rel string, isDir bool) bool {
	for _, p := range patterns {
		dirOnly := strings.HasSuffix(p, "/")
		p = strings.TrimSuffix(p, "/")
		if dirOnly && !isDir {
			continue
		}
		target := path.Base(rel)
		if strings.Contains(p, "/") {
			target = rel
		}
		if ok, _ := path.Match(strings.TrimPrefix(p, "/"), target); ok {
			return true
		}
	}
	return false
}

func makeCapabilities(o options) (Capabilities, error) {
	v, err := semver.NewVersion(o.kubeVersion)
	if err != nil {
		return Capabilities{}, fmt.Errorf("--kube-version: %w", err)
	}
	// The built-in API versions the chart may ask about, plus any passed in (CRDs such as
	// monitoring.coreos.com/v1 are absent unless given, as with `helm template`).
	apiVersions := VersionSet{"v1", "apps/v1", "policy/v1", "autoscaling/v2", "autoscaling/v1", "batch/v1",
		"networking.k8s.io/v1", "rbac.authorization.k8s.io/v1"}
	apiVersions = append(apiVersions, o.apiVersions...)
	return Capabilities{
		APIVersions: apiVersions,
		KubeVersion: KubeVersion{Version: "v" + v.String(), Major: strconv.FormatUint(v.Major(), 10), Minor: strconv.FormatUint(v.Minor(), 10)},
		HelmVersion: map[string]string{"Version": "v3.16.0"},
	}, nil
}

func checkKubeVersion(constraint, kubeVersion string) error {
	c, err := semver.NewConstraint(constraint)
	if err != nil {
		return fmt.Errorf("Chart.yaml kubeVersion %q: %w", constraint, err)
	}
	v, err := semver.NewVersion(kubeVersion)
	if err != nil {
		return err
	}
	if !c.Check(v) {
		return fmt.Errorf("chart requires kubeVersion: %s which is incompatible with Kubernetes %s", constraint, kubeVersion)
	}
	return nil
}

// ---- values ----

func loadValues(o options) (map[string]interface{}, error) {
	defaults, err := readValuesFile(filepath.Join(o.chartDir, "values.yaml"))
	if err != nil {
		return nil, err
	}
	user := map[string]interface{}{}
	for _, file := range o.valueFiles {
		next, err := readValuesFile(file)
		if err != nil {
			return nil, err
		}
		user = mergeMaps(user, next)
	}
	for _, assignment := range o.setValues {
		if err := applySet(user, assignment); err != nil {
			return nil, err
		}
	}
	return coalesce(user, defaults), nil
}

// readValuesFile parses YAML and round-trips it through JSON, as Helm's sigs.k8s.io/yaml loading
// does: every number becomes float64 (so 1000000 prints as 1e+06 unless a template converts it).
func readValuesFile(file string) (map[string]interface{}, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var raw interface{}
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if raw == nil {
		return map[string]interface{}{}, nil
	}
	converted, err := jsonRoundTrip(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	m, ok := converted.(map[string]interface{})
	if !ok {
		return nil, fmt.Errorf("%s: the top level must be a map", file)
	}
	return m, nil
}

func jsonRoundTrip(v interface{}) (interface{}, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out interface{}
	err = json.Unmarshal(data, &out)
	return out, err
}

// mergeMaps merges b into a (b wins; nested maps merged), as Helm merges several -f files.
func mergeMaps(a, b map[string]interface{}) map[string]interface{} {
	out := make(map[string]interface{}, len(a))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if vm, ok := v.(map[string]interface{}); ok {
			if om, ok := out[k].(map[string]interface{}); ok {
				out[k] = mergeMaps(om, vm)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// coalesce lays the user's values over the chart's defaults as Helm's CoalesceValues does:
// nested maps merge, anything else from the user wins, and a user null deletes the default.
func coalesce(user, defaults map[string]interface{}) map[string]interface{} {
	out := make(map[string]interface{}, len(user))
	for k, v := range user {
		out[k] = v
	}
	for k, dv := range defaults {
		uv, present := out[k]
		switch {
		case !present:
			out[k] = deepCopy(dv)
		case uv == nil:
			delete(out, k)
		default:
			um, userIsMap := uv.(map[string]interface{})
			dm, defaultIsMap := dv.(map[string]interface{})
			if userIsMap && defaultIsMap {
				out[k] = coalesce(um, dm)
			}
		}
	}
	return out
}

func deepCopy(v interface{}) interface{} {
	switch t := v.(type) {
	case map[string]interface{}:
		out := make(map[string]interface{}, len(t))
		for k, x := range t {
			out[k] = deepCopy(x)
		}
		return out
	case []interface{}:
		out := make([]interface{}, len(t))
		for i, x := range t {
			out[i] = deepCopy(x)
		}
		return out
	default:
		return v
	}
}

// applySet handles --set a.b.c=value: dotted keys (no list indexes, no escaped dots); the value
// is typed as Helm's strvals types it (true/false, null, int64, else string).
func applySet(values map[string]interface{}, assignment string) error {
	eq := strings.IndexByte(assignment, '=')
	if eq <= 0 {
		return fmt.Errorf("--set %q: want key.path=value", assignment)
	}
	keys := strings.Split(assignment[:eq], ".")
	raw := assignment[eq+1:]
	var value interface{} = raw
	switch {
	case raw == "true":
		value = true
	case raw == "false":
		value = false
	case raw == "null":
		value = nil
	default:
		// A leading zero keeps the text a string ("007"), as Helm's strvals does.
		leadingZero := len(raw) > 1 && raw[0] == '0'
		if n, err := strconv.ParseInt(raw, 10, 64); err == nil && !leadingZero {
			value = n
		}
	}
	m := values
	for _, key := range keys[:len(keys)-1] {
		next, ok := m[key].(map[string]interface{})
		if !ok {
			next = map[string]interface{}{}
			m[key] = next
		}
		m = next
	}
	m[keys[len(keys)-1]] = value
	return nil
}

// ---- template engine ----

type renderer struct {
	root          *template.Template
	strict        bool
	includeDepths map[string]int
}

func newRenderer(strict bool) *renderer {
	r := &renderer{strict: strict, includeDepths: map[string]int{}}
	r.root = template.New("gotpl")
	r.root.Funcs(r.funcMap())
	r.setMissingKey(r.root)
	return r
}

func (r *renderer) setMissingKey(t *template.Template) {
	if r.strict {
		t.Option("missingkey=error")
	} else {
		t.Option("missingkey=zero")
	}
}

func (r *renderer) parse(templates map[string]string) error {
	names := make([]string, 0, len(templates))
	for name := range templates {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if _, err := r.root.New(name).Parse(templates[name]); err != nil {
			return fmt.Errorf("parse error in %q: %w", name, err)
		}
	}
	return nil
}

// render executes one template with its own .Template and, like Helm, drops "<no value>".
func (r *renderer) render(name string, top map[string]interface{}) (string, error) {
	context := make(map[string]interface{}, len(top)+1)
	for k, v := range top {
		context[k] = v
	}
	context["Template"] = map[string]interface{}{"Name": name, "BasePath": path.Dir(name)}
	var buf bytes.Buffer
	if err := r.root.ExecuteTemplate(&buf, name, context); err != nil {
		return "", fmt.Errorf("render error in %q: %w", name, err)
	}
	return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
}

func (r *renderer) funcMap() template.FuncMap {
	f := sprig.TxtFuncMap()
	// Helm removes these: a chart must render the same everywhere.
	delete(f, "env")
	delete(f, "expandenv")

	f["include"] = func(name string, data interface{}) (string, error) {
		if r.includeDepths[name] >= includeDepthMax {
			return "", fmt.Errorf("rendering template has a nested reference name: %s", name)
		}
		r.includeDepths[name]++
		defer func() { r.includeDepths[name]-- }()
		var buf bytes.Buffer
		if err := r.root.ExecuteTemplate(&buf, name, data); err != nil {
			return "", err
		}
		return buf.String(), nil
	}
	f["tpl"] = func(text string, data interface{}) (string, error) {
		clone, err := r.root.Clone()
		if err != nil {
			return "", err
		}
		r.setMissingKey(clone)
		name := "tpl"
		if m, ok := data.(map[string]interface{}); ok {
			if t, ok := m["Template"].(map[string]interface{}); ok {
				name = fmt.Sprint(t["Name"])
			}
		}
		t, err := clone.New(name + ":tpl").Parse(text)
		if err != nil {
			return "", fmt.Errorf("tpl: %w", err)
		}
		var buf bytes.Buffer
		if err := t.Execute(&buf, data); err != nil {
			return "", fmt.Errorf("tpl: %w", err)
		}
		return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
	}
	f["required"] = func(message string, value interface{}) (interface{}, error) {
		if value == nil {
			return nil, errors.New(message)
		}
		if s, ok := value.(string); ok && s == "" {
			return nil, errors.New(message)
		}
		return value, nil
	}
	f["toYaml"] = toYaml
	f["mustToYaml"] = func(v interface{}) (string, error) {
		normalized, err := normalizeForYaml(v)
		if err != nil {
			return "", err
		}
		data, err := marshalYaml(normalized)
		return strings.TrimSuffix(data, "\n"), err
	}
	f["toJson"] = func(v interface{}) string {
		data, err := json.Marshal(v)
		if err != nil {
			return ""
		}
		return string(data)
	}
	f["mustToJson"] = func(v interface{}) (string, error) {
		data, err := json.Marshal(v)
		return string(data), err
	}
	f["fromYaml"] = func(text string) map[string]interface{} {
		m := map[string]interface{}{}
		var raw interface{}
		if err := yaml.Unmarshal([]byte(text), &raw); err != nil {
			m["Error"] = err.Error()
			return m
		}
		converted, err := jsonRoundTrip(raw)
		if err != nil {
			m["Error"] = err.Error()
			return m
		}
		if cm, ok := converted.(map[string]interface{}); ok {
			return cm
		}
		return m
	}
	f["fromYamlArray"] = func(text string) []interface{} {
		var raw interface{}
		if err := yaml.Unmarshal([]byte(text), &raw); err != nil {
			return []interface{}{err.Error()}
		}
		converted, err := jsonRoundTrip(raw)
		if err != nil {
			return []interface{}{err.Error()}
		}
		if list, ok := converted.([]interface{}); ok {
			return list
		}
		return []interface{}{}
	}
	f["fromJson"] = func(text string) map[string]interface{} {
		m := map[string]interface{}{}
		if err := json.Unmarshal([]byte(text), &m); err != nil {
			m["Error"] = err.Error()
		}
		return m
	}
	f["fromJsonArray"] = func(text string) []interface{} {
		var list []interface{}
		if err := json.Unmarshal([]byte(text), &list); err != nil {
			return []interface{}{err.Error()}
		}
		return list
	}
	// Like `helm template`: no cluster, so lookups find nothing.
	f["lookup"] = func(apiVersion, kind, namespace, name string) (map[string]interface{}, error) {
		return map[string]interface{}{}, nil
	}
	return f
}

// toYaml is Helm's: marshal and trim the final newline; errors give "".
func toYaml(v interface{}) string {
	normalized, err := normalizeForYaml(v)
	if err != nil {
		return ""
	}
	data, err := marshalYaml(normalized)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(data, "\n")
}

func marshalYaml(v interface{}) (string, error) {
	var buf bytes.Buffer
	encoder := yaml.NewEncoder(&buf)
	encoder.SetIndent(2)
	if err := encoder.Encode(v); err != nil {
		return "", err
	}
	if err := encoder.Close(); err != nil {
		return "", err
	}
	return buf.String(), nil
}

// normalizeForYaml goes through JSON first, as Helm's sigs.k8s.io/yaml does, so struct tags and
// map keys behave the same and whole numbers print as 5000, not 5e+03 (yaml.v3 would print a
// float64 in exponent form).
func normalizeForYaml(v interface{}) (interface{}, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	decoder := json.NewDecoder(bytes.NewReader(data))
	decoder.UseNumber()
	var raw interface{}
	if err := decoder.Decode(&raw); err != nil {
		return nil, err
	}
	return numbersToGo(raw), nil
}

var wholeNumber = regexp.MustCompile(`^-?\d+$`)

func numbersToGo(v interface{}) interface{} {
	switch t := v.(type) {
	case map[string]interface{}:
		for k, x := range t {
			t[k] = numbersToGo(x)
		}
		return t
	case []interface{}:
		for i, x := range t {
			t[i] = numbersToGo(x)
		}
		return t
	case json.Number:
		if wholeNumber.MatchString(t.String()) {
			if n, err := t.Int64(); err == nil {
				return n
			}
		}
		if f, err := t.Float64(); err == nil {
			if f == float64(int64(f)) && f < 1e18 && f > -1e18 {
				return int64(f)
			}
			return f
		}
		return t.String()
	default:
		return v
	}
}

// splitManifests is Helm's releaseutil.SplitManifests for one file: split on `---` lines, trim,
// drop empty documents.
var manifestSeparator = regexp.MustCompile("(?:^|\\s*\n)---\\s*")

func splitManifests(rendered string) []string {
	var docs []string
	for _, d := range manifestSeparator.Split(strings.TrimSpace(rendered), -1) {
		d = strings.TrimSpace(d)
		if d != "" {
			docs = append(docs, d)
		}
	}
	return docs
}
