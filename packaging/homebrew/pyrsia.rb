# Homebrew formula for pyrsia: the single-file release binary (`make binary` →
# dist/pyrsia, built on each platform) plus its shell completions.
#
# A GitHub release vVERSION publishes these assets:
#   pyrsia-VERSION-darwin-arm64    dist/pyrsia built on Apple silicon
#   pyrsia-VERSION-darwin-x86_64   dist/pyrsia built on an Intel Mac
#   pyrsia-VERSION-linux-arm64     dist/pyrsia built on Linux/aarch64
#   pyrsia-VERSION-linux-x86_64    dist/pyrsia built on Linux/x86-64
#   completions-VERSION.tar.gz     tar -czf completions-VERSION.tar.gz completions
# To cut a release, set `version` and the completions URL, then replace each sha256
# placeholder (64 zeros) with `shasum -a 256 ASSET` of the published file; brew
# refuses a download whose checksum differs.
#
#   brew install pyrsia/tap/pyrsia
#   brew services start pyrsia        # runs `pyrsia daemon` on http://127.0.0.1:7888
class Pyrsia < Formula
  desc "Decentralized package network for Docker images and Maven artifacts"
  homepage "https://github.com/pyrsia/pyrsia"
  version "0.1.0"
  license "Apache-2.0"

  on_macos do
    on_arm do
      url "https://github.com/pyrsia/pyrsia/releases/download/v#{version}/pyrsia-#{version}-darwin-arm64"
      sha256 "0000000000000000000000000000000000000000000000000000000000000000"
    end
    on_intel do
      url "https://github.com/pyrsia/pyrsia/releases/download/v#{version}/pyrsia-#{version}-darwin-x86_64"
      sha256 "0000000000000000000000000000000000000000000000000000000000000000"
    end
  end

  on_linux do
    on_arm do
      url "https://github.com/pyrsia/pyrsia/releases/download/v#{version}/pyrsia-#{version}-linux-arm64"
      sha256 "0000000000000000000000000000000000000000000000000000000000000000"
    end
    on_intel do
      url "https://github.com/pyrsia/pyrsia/releases/download/v#{version}/pyrsia-#{version}-linux-x86_64"
      sha256 "0000000000000000000000000000000000000000000000000000000000000000"
    end
  end

  resource "completions" do
    url "https://github.com/pyrsia/pyrsia/releases/download/v0.1.0/completions-0.1.0.tar.gz"
    sha256 "0000000000000000000000000000000000000000000000000000000000000000"
  end

  def install
    # A bare (uncompressed) download is staged under its asset name.
    bin.install Dir["pyrsia-#{version}-*"].first => "pyrsia"
    resource("completions").stage do # Homebrew enters the tarball's single top directory
      bash_completion.install "pyrsia.bash" => "pyrsia"
      zsh_completion.install "_pyrsia"
      fish_completion.install "pyrsia.fish"
    end
  end

  def post_install
    (var/"pyrsia").mkpath
  end

  service do
    run [opt_bin/"pyrsia", "daemon", "--home", var/"pyrsia"]
    keep_alive true
    working_dir var/"pyrsia"
    log_path var/"log/pyrsia.log"
    error_log_path var/"log/pyrsia.log"
  end

  test do
    assert_equal "pyrsia #{version}", shell_output("#{bin}/pyrsia --version").strip
    assert_match "daemon", shell_output("#{bin}/pyrsia --help")
  end
end
