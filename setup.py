"""kernels/ and widgets/ are top-level folders that install as lab.kernels and lab.widgets.

They must never install as top-level `kernels` or `widgets`: transformers probes for a package named
`kernels` (Hugging Face's kernel hub) and would take ours for it.
"""
from setuptools import find_packages, setup

mapped = {"lab.kernels": "kernels", "lab.widgets": "widgets"}
packages = find_packages(include=["lab", "lab.*"])
package_dir = {"lab": "lab"}
for name, folder in mapped.items():
    packages.append(name)
    package_dir[name] = folder
    for sub in find_packages(where=folder):
        packages.append(f"{name}.{sub}")
        package_dir[f"{name}.{sub}"] = f"{folder}/{sub.replace('.', '/')}"

setup(packages=packages, package_dir=package_dir, include_package_data=True,
      package_data={"lab.data": ["*.jsonl", "*.json", "fastdraft/*", "dllm-default/*"]})
